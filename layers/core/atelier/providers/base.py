"""The provider port: what every AI provider adapter (mock, fal.ai, Replicate, Cog...) implements.

The task domain talks to providers only through :class:`Provider` and only sees normalized values:
one status enum, one error shape, outputs as (URL, content type), the actual cost in credits and
whether the provider charged for a failure. Each adapter maps its provider's own vocabulary
(``starting``/``processing``, ``IN_QUEUE``/``COMPLETED``, ``aborted``...) onto these.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from atelier.errors import DomainError, ErrorKind, Unauthorized


class Status(StrEnum):
    """The normalized status of a task (and of a provider's job)."""

    QUEUED = 'queued'
    SUBMITTED = 'submitted'
    RUNNING = 'running'
    SUCCEEDED = 'succeeded'
    FAILED = 'failed'
    CANCELED = 'canceled'
    EXPIRED = 'expired'

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.EXPIRED})
OPEN_STATUSES = (Status.QUEUED, Status.SUBMITTED, Status.RUNNING)


class ProviderUnavailable(DomainError):
    """A transient provider failure (timeout, 5xx, 429): the same call may succeed later.

    Step Functions retries the steps that raise it (``ErrorEquals: ["ProviderUnavailable"]``).
    """

    kind = ErrorKind.UNAVAILABLE
    code = 'provider_unavailable'


class ProviderRejected(DomainError):
    """The provider refused the job for good (4xx on submit): retrying cannot help."""

    kind = ErrorKind.INVALID
    code = 'provider_rejected'


class StartTooLate(ProviderRejected):
    """Too little of the task's time is left for the job to start and finish: nothing was sent (the task expires)."""

    code = 'deadline_exceeded'


class InvalidWebhookSignature(Unauthorized):
    code = 'invalid_signature'


class MalformedWebhook(DomainError):
    """A correctly signed webhook whose body is not a prediction: retrying the same body cannot help (400)."""

    kind = ErrorKind.BAD_REQUEST
    code = 'malformed_webhook'


class JobError(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class JobOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    url: str
    content_type: str


class ProviderCost(BaseModel):
    """The provider's own measure of what a job cost us, in its unit (fal ``billable_units``, Replicate
    ``predict_time`` seconds...): kept on the settled task next to the credits charged, for margin reports."""

    model_config = ConfigDict(frozen=True)

    unit: str
    amount: float = Field(ge=0)
    #: How long the job waited before it ran, in milliseconds, when the provider says (RunPod ``delayTime``:
    #: queue time plus a worker's cold start, which RunPod bills as worker time though not as execution).
    delay_ms: float | None = Field(default=None, ge=0)

    @model_serializer(mode='wrap')
    def _without_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A provider that reports no delay stores just its unit and amount, as before the field existed.
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if not (key == 'delay_ms' and value is None)}


class JobState(BaseModel):
    """What a provider says about one job, normalized."""

    model_config = ConfigDict(frozen=True)

    provider_job_id: str
    status: Status
    raw_status: str = ''
    progress: float | None = Field(default=None, ge=0, le=1)
    #: How many jobs are ahead of this one in the provider's queue, while it waits there (fal ``queue_position``).
    queue_position: int | None = Field(default=None, ge=0)
    outputs: tuple[JobOutput, ...] = ()
    error: JobError | None = None
    #: For failures and cancels: whether the provider billed us anyway (kept for margin reports).
    charged_by_provider: bool = False
    #: The actual cost in credits, when the adapter prices what the provider produced; None: the task service
    #: prices the outputs delivered from the task's own input (an image model's images, else its estimate).
    actual_credits: int | None = Field(default=None, ge=0)
    #: What the provider reports the job cost it (None: it does not say).
    cost: ProviderCost | None = None

    @classmethod
    def lost(cls, provider_job_id: str, message: str) -> JobState:
        """The provider does not know the job (any more): final, failed, never charged."""
        return cls(
            provider_job_id=provider_job_id,
            status=Status.FAILED,
            raw_status='not_found',
            error=JobError(code='provider_job_lost', message=message),
        )

    @property
    def is_final(self) -> bool:
        return self.status.is_final


class Job(BaseModel):
    """What the domain asks a provider to run."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    model_id: str
    provider_model: str
    #: The validated input, with upload keys replaced by URLs the provider can fetch.
    input: dict[str, Any]
    #: Where the provider should send its webhooks ('' when there is no public URL).
    webhook_url: str = ''
    deadline_seconds: int


class Provider(Protocol):
    """One AI provider, reached over its own API."""

    name: str

    def submit(self, job: Job) -> JobState:
        """Start ``job``. Idempotent per ``job.task_id``: a second call never starts a second job.

        Raises :class:`ProviderUnavailable` (retry later) or :class:`ProviderRejected` (never).
        """
        ...

    def poll(self, provider_job_id: str) -> JobState:
        """The job's current state (raises :class:`ProviderUnavailable`)."""
        ...

    def cancel(self, provider_job_id: str) -> JobState:
        """Ask the provider to stop the job; returns its state after asking (it may still be running).

        Final only when the provider says how the job ended. "I do not know this job" (Cog's 404 on cancel:
        it may have just finished, its webhook on the way) is not final: the task keeps waiting.
        """
        ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> JobState:
        """Verify a webhook's signature over the raw ``body`` and parse it.

        Raises :class:`InvalidWebhookSignature` when it was not signed by this provider.
        """
        ...
