"""The task domain's models: the task as stored, its outcome, and what the API and the steps exchange."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from atelier.providers.base import JobError, JobState, ProviderCost, Status
from atelier.storage import StoredObject

TaskStatus = Status


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Outcome(_Frozen):
    """How a task ends, decided exactly once (the first claim wins; every later step completes it)."""

    status: Status
    #: Credits to capture from the hold (0 for every status but succeeded).
    charge: int = Field(ge=0)
    outputs: tuple[StoredObject, ...] = ()
    error: JobError | None = None


class Task(_Frozen):
    """A generation task, as the task store keeps it."""

    task_id: str
    account_id: str
    model_id: str
    provider: str
    status: Status
    input: dict[str, Any]
    estimated: int
    held: int
    charged: int = 0
    refunded: int = 0
    progress: float | None = None
    #: Jobs ahead of this one in the provider's queue, while it waits there (None: not queued, or not said).
    queue_position: int | None = None
    outputs: tuple[StoredObject, ...] = ()
    error: JobError | None = None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    deadline_at: datetime
    request_hash: str
    provider_job_id: str | None = None
    #: The provider's final word (from a webhook, a poll or a cancel), once it has one.
    provider_state: JobState | None = None
    #: What the provider says the job cost it (fal billable units...), kept for margin reports.
    provider_cost: ProviderCost | None = None
    outcome: Outcome | None = None
    cancel_requested: bool = False
    #: The Step Functions task token of the wait in progress, if any.
    token: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status.is_final

    def seconds_left(self, now: datetime) -> float:
        return (self.deadline_at - now).total_seconds()


class TaskCredits(_Frozen):
    estimated: int
    held: int
    charged: int
    refunded: int


class OutputView(_Frozen):
    url: str
    content_type: str
    size: int


class ErrorView(_Frozen):
    code: str
    message: str


class TaskView(_Frozen):
    """A task as clients see it (``GET /v1/tasks/{id}``)."""

    id: str
    model: str
    status: Status
    input: dict[str, Any]
    credits: TaskCredits
    outputs: list[OutputView]
    error: ErrorView | None
    progress: float | None
    #: How many jobs are ahead of this one in the provider's queue while it waits there; null otherwise.
    queue_position: int | None = None
    cancel_requested: bool
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    deadline_at: datetime


class TaskPage(_Frozen):
    items: list[TaskView]
    next_cursor: str | None


class CreateTaskRequest(BaseModel):
    """A model of the catalog (``GET /v1/models``) and its input, which that model's ``input_schema`` describes.

    The OpenAPI document details it per model family (``infra.openapi``); the catalog validates it."""

    model_config = ConfigDict(extra='forbid')

    model: str = Field(min_length=1, max_length=200, examples=['mock/image'])
    input: dict[str, Any] = Field(examples=[{'prompt': 'a red fox in the snow', 'num_images': 1}])


class EstimateRequest(CreateTaskRequest):
    pass


class Estimate(_Frozen):
    model: str
    credits: int


class Created(_Frozen):
    """A created (``new``) or replayed task."""

    task: TaskView
    new: bool


class StepInput(BaseModel):
    """What every state-machine step receives (extra fields, like a caught error, are kept)."""

    model_config = ConfigDict(extra='allow')

    task_id: str
    account_id: str


class AwaitInput(StepInput):
    token: str


class ReleaseInput(StepInput):
    #: What the state machine caught (``{"Error", "Cause"}``) when a step failed for good.
    error: dict[str, Any] | None = None


class StepResult(_Frozen):
    """What every state-machine step returns; ``next`` drives the state machine's Choice."""

    task_id: str
    account_id: str
    next: Literal['await', 'settle', 'release', 'done']
    wait_seconds: int = Field(default=1, ge=1)
