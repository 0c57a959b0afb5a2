"""The task lifecycle: create, dispatch, submit, wait, poll, settle or release, cancel, sweep.

How a task ends is decided exactly once: the first step to *claim* an :class:`Outcome` on the task
(a conditional write) wins, and every later step - a retried Settle, the sweeper, a cancel - only
*completes* that outcome: copy outputs (before the claim), capture or release the hold through the
ledger (idempotent by task id), then write the final status. So whatever runs twice, or races,
credits move once and the task's status always matches the ledger.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from atelier.catalog import Catalog, ModelSpec
from atelier.catalog.plans import Plans, load_plans
from atelier.catalog.schemas import UPLOADS_PREFIX, FamilyInput
from atelier.errors import DomainError
from atelier.ledger.errors import ConcurrencyLimitExceeded, ExtraItemConditionFailed, InsufficientCredits
from atelier.observability import logger
from atelier.providers.base import (
    OPEN_STATUSES,
    Job,
    JobError,
    JobState,
    ProviderRejected,
    ProviderUnavailable,
    StartTooLate,
    Status,
)
from atelier.providers.common import delivered_credits
from atelier.providers.registry import ProviderRegistry
from atelier.storage import MediaStore, OutputRefused, OutputUnavailable, account_media_prefixes, extension_for
from atelier.tasks.errors import (
    ForeignUpload,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    TaskFinished,
    TaskNotFound,
    UploadNotFound,
)
from atelier.tasks.models import (
    AwaitInput,
    Created,
    CreateTaskRequest,
    ErrorView,
    Estimate,
    Outcome,
    OutputView,
    ReleaseInput,
    StepInput,
    StepResult,
    Task,
    TaskCredits,
    TaskPage,
    TaskView,
    utcnow,
)
from atelier.tasks.ports import DispatchQueue, LedgerPort, Workflow
from atelier.tasks.store import IdempotencyRecord, TaskStore, idempotency_from_item

OUTPUT_URL_SECONDS = 3600


@dataclass
class ClosedTasks:
    """What :meth:`TaskService.close_account` did: open tasks ended (refunded), finished tasks erased."""

    ended: int = 0
    erased: int = 0


def new_task_id(now: datetime) -> str:
    """``tsk_`` + milliseconds (hex) + randomness: unique, sortable by creation, a valid execution name."""
    return f'tsk_{int(now.timestamp() * 1000):012x}{secrets.token_hex(8)}'


def request_hash(model: str, data: Any) -> str:
    canonical = json.dumps({'model': model, 'input': data}, sort_keys=True, separators=(',', ':'))
    return hashlib.sha256(canonical.encode()).hexdigest()


def output_key(account_id: str, task_id: str, n: int, content_type: str) -> str:
    outputs, _ = account_media_prefixes(account_id)
    return f'{outputs}{task_id}/{n}.{extension_for(content_type)}'


@dataclass
class TaskService:
    """Every task operation, over its ports (the real adapters are wired in :mod:`atelier.tasks.wiring`)."""

    store: TaskStore
    ledger: LedgerPort
    catalog: Catalog
    providers: ProviderRegistry
    media: MediaStore
    queue: DispatchQueue
    workflow: Workflow
    public_api_url: str = ''
    sweep_grace_seconds: int = 60
    plans: Plans = field(default_factory=load_plans)
    clock: Callable[[], datetime] = field(default=utcnow)

    # ================================================================== API
    def estimate(self, model_id: str, data: Any) -> Estimate:
        """The credits a task with this input would hold."""
        model = self.catalog.get(model_id)
        return Estimate(model=model.id, credits=model.estimate(model.validate_input(data)))

    def create(self, account_id: str, idempotency_key: str | None, request: CreateTaskRequest) -> Created:
        """Validate, price, and in one transaction hold the credits, put the task and the idempotency record.

        The same key with the same body gives the same task (``new=False``); with another body, 409.
        """
        key = (idempotency_key or '').strip(' \t')  # what HTTP would strip (RFC 9110 OWS), nothing more
        if not 1 <= len(key) <= 255:
            raise InvalidIdempotencyKey('Send an Idempotency-Key header of 1 to 255 characters.')
        digest = request_hash(request.model, request.input)
        previous = self.store.get_idempotency(account_id, key)
        if previous is not None:
            return self._replay(account_id, previous, digest)

        model = self.catalog.get(request.model)
        data = model.validate_input(request.input)
        self._check_uploads(account_id, data)
        amount = model.estimate(data)
        limits = self.plans.limits(self.ledger.get_account(account_id).plan)
        now = self.clock()
        task = Task(
            task_id=new_task_id(now),
            account_id=account_id,
            model_id=model.id,
            provider=model.provider,
            status=Status.QUEUED,
            input=data.model_dump(mode='json', exclude_none=True),
            estimated=amount,
            held=amount,
            created_at=now,
            updated_at=now,
            deadline_at=now + timedelta(seconds=model.limits.deadline_seconds),
            request_hash=digest,
        )
        try:
            self.ledger.hold(
                account_id,
                task_id=task.task_id,
                amount=amount,
                max_open_holds=limits.max_concurrent_tasks,
                extra_items=[self.store.put_task(task), self.store.put_idempotency(account_id, key, task)],
            )
        except ExtraItemConditionFailed as exc:
            # Another request with the same key won the race: answer as a replay of it.
            record = idempotency_from_item(exc.item) if exc.item else self.store.get_idempotency(account_id, key)
            if exc.index != 1 or record is None:
                raise
            return self._replay(account_id, record, digest)
        except (InsufficientCredits, ConcurrencyLimitExceeded):
            # The same key may have won the race with the last credits or slot: then this is its replay.
            record = self.store.get_idempotency(account_id, key)
            if record is None:
                raise
            return self._replay(account_id, record, digest)
        self.queue.send(task.task_id, account_id)
        logger.info('task created', extra={'task_id': task.task_id, 'model': model.id, 'credits': amount})
        return Created(task=self.view(task), new=True)

    def _replay(self, account_id: str, record: IdempotencyRecord, digest: str) -> Created:
        if record.request_hash != digest:
            raise IdempotencyKeyReused('This Idempotency-Key was used with a different request.')
        task = self._own(account_id, record.task_id)
        if task.status is Status.QUEUED:
            # The first answer may have been lost before the task reached the queue; starting is idempotent.
            self.queue.send(task.task_id, account_id)
        return Created(task=self.view(task), new=False)

    def _check_uploads(self, account_id: str, data: FamilyInput) -> None:
        for value in data.model_dump().values():
            if isinstance(value, str) and value.startswith(UPLOADS_PREFIX):
                if not value.startswith(f'{UPLOADS_PREFIX}{account_id}/'):
                    raise ForeignUpload('The input references an upload of another account.')
                if not self.media.exists(value):
                    raise UploadNotFound(f'There is no upload {value!r}; upload the file first.')

    def get(self, account_id: str, task_id: str) -> TaskView:
        return self.view(self._own(account_id, task_id))

    def list(self, account_id: str, *, limit: int, status: Status | None, cursor: str | None) -> TaskPage:
        tasks, next_cursor = self.store.list_for_account(account_id, limit=limit, status=status, cursor=cursor)
        return TaskPage(items=[self.view(t) for t in tasks], next_cursor=next_cursor)

    def cancel(self, account_id: str, task_id: str) -> TaskView:
        """Before submit: canceled at once, all credits back. Running: ask the provider, then its final word decides.

        The provider's answer is final only when it says so; one that cannot tell (Cog's 404: a prediction
        it no longer knows, maybe just finished) answers not final, and the task keeps waiting: a late
        ``succeeded`` is delivered and charged, anything else refunded. A task whose cancel the provider
        never confirms ends ``canceled`` and refunded, at the latest at its deadline.
        """
        task = self._own(account_id, task_id)
        if task.is_final:
            raise TaskFinished('The task has already finished.')
        now = self.clock()
        if task.provider_job_id is None:
            outcome = Outcome(
                status=Status.CANCELED,
                charge=0,
                error=JobError(code='canceled', message='Canceled before it started; every credit was refunded.'),
            )
            claimed = self.store.claim_outcome(task_id, outcome, now, unsubmitted=True)
            if claimed is not None:
                return self.view(self._complete(claimed, wake=True))
            task = self._load(task_id)
        if task.outcome is None and not task.is_final:
            task = self.store.request_cancel(task_id, now) or self._load(task_id)
            if task.provider_job_id is not None and task.provider_state is None:
                state = self.providers.get(task.provider).cancel(task.provider_job_id)
                if state.is_final:
                    self._record_final(task, state)
        return self.view(self._load(task_id))

    def close_account(self, account_id: str) -> ClosedTasks:
        """For a deleted account: end every open task now and erase what its tasks kept of the user's content.

        An open task is canceled with every credit held refunded (whatever the provider says later: nobody is
        left to deliver a result to), and its provider is asked to stop; a task whose outcome was claimed
        before (a success whose outputs are stored) completes as claimed. Then each finished task is erased
        (:meth:`TaskStore.erase`). Safe to run again, and alongside the task's own execution (the first claim
        wins, credits move once).
        """
        closed = ClosedTasks()
        for task in self.store.account_tasks(account_id):
            if not task.is_final:
                self._abandon(task)
                closed.ended += 1
            if self.store.erase(task.task_id, self.clock()):
                closed.erased += 1
        return closed

    def _abandon(self, task: Task) -> Task:
        if task.outcome is None:
            message = 'The account was deleted; every credit held was refunded.'
            outcome = Outcome(status=Status.CANCELED, charge=0, error=JobError(code='account_deleted', message=message))
            claimed = self.store.claim_outcome(task.task_id, outcome, self.clock())
            if claimed is not None and claimed.provider_job_id and claimed.provider_state is None:
                with contextlib.suppress(DomainError):  # best effort: stop the provider's work (and its bill)
                    self.providers.get(claimed.provider).cancel(claimed.provider_job_id)
            task = claimed or self._load(task.task_id)
        return self._complete(task, wake=True)

    # ================================================================== state machine steps
    def dispatch(self, task_id: str, account_id: str) -> bool:
        """Start the task's execution; False when it was started before."""
        return self.workflow.start(task_id, account_id)

    def submit(self, step: StepInput) -> StepResult:
        """Send the task to its provider once (the provider's submit is idempotent per task id)."""
        task = self._load(step.task_id)
        now = self.clock()
        if task.provider_job_id is None and self._undecided(task) and now < task.deadline_at:
            provider = self.providers.get(task.provider)
            model = self.catalog.get(task.model_id)
            job = Job(
                task_id=task.task_id,
                model_id=model.id,
                provider_model=model.provider_model,
                input=self._job_input(task),
                webhook_url=self._webhook_url(task.provider),
                deadline_seconds=max(1, int(task.seconds_left(now))),
            )
            try:
                state = provider.submit(job)
            except ProviderRejected as exc:
                rejected = JobState(
                    provider_job_id='',
                    status=Status.EXPIRED if isinstance(exc, StartTooLate) else Status.FAILED,
                    error=JobError(code=exc.code, message=exc.message),
                )
                self.store.record_final_state(task.task_id, rejected, self.clock())
                return self._route(self._load(task.task_id), first=True)
            if not self.store.mark_submitted(task, state, self.clock()):
                # Canceled while we were submitting: stop the job we just started.
                with contextlib.suppress(DomainError):
                    provider.cancel(state.provider_job_id)
            elif state.is_final:
                self.store.record_final_state(task.task_id, state, self.clock())
            task = self._load(task.task_id)
        return self._route(task, first=True)

    def await_provider(self, step: AwaitInput) -> None:
        """Keep the wait's token on the task, for the webhook; wake the wait at once if there is nothing to wait for."""
        task = self.store.set_token(step.task_id, step.token, self.clock())
        if task is None or not self._undecided(task) or self.clock() >= task.deadline_at:
            self.workflow.resume(step.token)

    def poll(self, step: StepInput) -> StepResult:
        """After a wait: ask the provider once (a missed webhook is found here), then route."""
        task = self._load(step.task_id)
        if self._undecided(task) and task.provider_job_id is not None and self.clock() < task.deadline_at:
            try:
                state = self.providers.get(task.provider).poll(task.provider_job_id)
            except ProviderUnavailable:
                logger.warning('poll failed; waiting again', extra={'task_id': task.task_id})
            else:
                if state.is_final:
                    self._record_final(task, state, wake=False)
                else:
                    self.store.record_progress(task.task_id, state, self.clock())
                task = self._load(task.task_id)
        return self._route(task, first=False)

    def settle(self, step: StepInput) -> StepResult:
        """Copy the outputs into S3, capture the actual cost (at most the hold) and release the rest."""
        task = self._load(step.task_id)
        if task.is_final:
            return self._result(task, 'done')
        if task.outcome is None:
            state = task.provider_state
            if state is None or state.status is not Status.SUCCEEDED:
                return self._route(task, first=False)
            claimed = self.store.claim_outcome(task.task_id, self._success_outcome(task, state), self.clock())
            task = claimed or self._load(step.task_id)
        self._complete(task, wake=False)
        return self._result(task, 'done')

    def release(self, step: ReleaseInput) -> StepResult:
        """End the task without a result (failed, canceled, expired): every credit held goes back."""
        task = self._load(step.task_id)
        if task.is_final:
            return self._result(task, 'done')
        if task.outcome is None:
            task = self._claim_failure(task, step.error)
        self._complete(task, wake=False)
        return self._result(task, 'done')

    # ================================================================== webhook, sweeper
    def handle_webhook(self, provider_name: str, headers: Mapping[str, str], body: bytes) -> str:
        """Verify and record a provider's webhook; wake the task's wait on its final word.

        Returns what happened: ``recorded``, ``progress`` or ``ignored`` (duplicate or late).
        """
        state = self.providers.get(provider_name).parse_webhook(headers, body)
        task_id = self.store.find_job(provider_name, state.provider_job_id)
        task = self.store.get(task_id) if task_id else None
        if task is None or task.provider != provider_name:
            raise TaskNotFound('No task has this provider job.')
        if task.is_final or task.provider_state is not None:
            if state.cost is not None and task.provider_cost is None:
                # A job that finished after its task ended (a late start, a cancel that was only a request):
                # the provider billed it, so ops see its cost; the credits were settled and stay as they are.
                self.store.record_cost(task.task_id, state.cost)
            return 'ignored'
        if state.is_final:
            return 'recorded' if self._record_final(task, state) else 'ignored'
        return 'progress' if self.store.record_progress(task.task_id, state, self.clock()) else 'ignored'

    def sweep(self) -> int:
        """Force every open task past its deadline (plus grace) to a final state; how many were forced."""
        now = self.clock()
        cutoff = now - timedelta(seconds=self.sweep_grace_seconds)
        forced = 0
        for status in OPEN_STATUSES:
            for task_id in list(self.store.due(status, cutoff)):
                try:
                    forced += self._force(task_id)
                except Exception:
                    logger.exception('sweeper could not finish a task', extra={'task_id': task_id})
        return forced

    def _force(self, task_id: str) -> int:
        task = self._load(task_id)
        if task.is_final:
            return 0
        if task.outcome is None:
            state = task.provider_state
            if state is not None and state.status is Status.SUCCEEDED:
                outcome = self._success_outcome(task, state)
                task = self.store.claim_outcome(task_id, outcome, self.clock()) or self._load(task_id)
            else:
                task = self._claim_failure(task, None)
        self._complete(task, wake=True)
        return 1

    # ================================================================== helpers
    def view(self, task: Task) -> TaskView:
        outputs = [
            OutputView(
                url=self.media.presigned_get(o.key, expires_in=OUTPUT_URL_SECONDS),
                content_type=o.content_type,
                size=o.size,
            )
            for o in task.outputs
        ]
        return TaskView(
            id=task.task_id,
            model=task.model_id,
            status=task.status,
            input=task.input,
            credits=TaskCredits(estimated=task.estimated, held=task.held, charged=task.charged, refunded=task.refunded),
            outputs=outputs,
            error=None if task.error is None else ErrorView(code=task.error.code, message=task.error.message),
            progress=task.progress,
            queue_position=None if task.is_final else task.queue_position,
            cancel_requested=task.cancel_requested,
            created_at=task.created_at,
            updated_at=task.updated_at,
            completed_at=task.completed_at,
            deadline_at=task.deadline_at,
        )

    def _load(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None:
            raise TaskNotFound(f'There is no task {task_id}.')
        return task

    def _own(self, account_id: str, task_id: str) -> Task:
        task = self.store.get(task_id)
        if task is None or task.account_id != account_id:
            raise TaskNotFound('There is no such task.')
        return task

    @staticmethod
    def _undecided(task: Task) -> bool:
        return not task.is_final and task.outcome is None and task.provider_state is None

    def _model(self, task: Task) -> ModelSpec:
        return self.catalog.get(task.model_id)

    def _result(self, task: Task, next_step: str, wait_seconds: int = 1) -> StepResult:
        return StepResult.model_validate(
            {'task_id': task.task_id, 'account_id': task.account_id, 'next': next_step, 'wait_seconds': wait_seconds}
        )

    def _route(self, task: Task, *, first: bool) -> StepResult:
        """Where the state machine goes next, from what the task says now."""
        if task.is_final:
            return self._result(task, 'done')
        decided = task.outcome.status if task.outcome else task.provider_state.status if task.provider_state else None
        if decided is not None:
            return self._result(task, 'settle' if decided is Status.SUCCEEDED else 'release')
        left = task.seconds_left(self.clock())
        if left <= 0 or task.provider_job_id is None:
            return self._result(task, 'release')
        limits = self._model(task).limits
        wait = limits.webhook_wait_seconds if first else limits.poll_interval_seconds
        return self._result(task, 'await', max(1, math.ceil(min(wait, left))))

    def _record_final(self, task: Task, state: JobState, *, wake: bool = True) -> bool:
        """Keep the provider's final word (once) and wake the wait that is holding the task's token."""
        recorded = self.store.record_final_state(task.task_id, state, self.clock())
        if recorded is not None and recorded.token and wake:
            self.workflow.resume(recorded.token)
        return recorded is not None

    def _success_outcome(self, task: Task, state: JobState) -> Outcome:
        try:
            if not state.outputs:
                raise OutputUnavailable('The provider reported success without any output.')
            stored = tuple(
                self.media.copy_from_url(
                    output.url,
                    output_key(task.account_id, task.task_id, n, output.content_type),
                    content_type=output.content_type,
                    provider=task.provider,
                )
                for n, output in enumerate(state.outputs)
            )
        except OutputRefused as exc:
            # The URL (query dropped: it may carry a signature) and why go to the logs; the user gets the code.
            url = exc.url.split('?', 1)[0][:500]
            extra = {'task_id': task.task_id, 'provider': task.provider, 'url': url, 'reason': exc.reason}
            logger.warning('output refused', extra=extra)
            return Outcome(status=Status.FAILED, charge=0, error=JobError(code=exc.code, message=exc.message))
        except OutputUnavailable as exc:
            return Outcome(status=Status.FAILED, charge=0, error=JobError(code=exc.code, message=exc.message))
        actual = state.actual_credits
        if actual is None:  # priced from the task's own input: the provider's report may not carry it
            actual = delivered_credits(self._model(task), task.input, len(stored))
        return Outcome(status=Status.SUCCEEDED, charge=min(actual, task.held), outputs=stored)

    def _claim_failure(self, task: Task, caught: dict[str, Any] | None) -> Task:
        outcome = self._failure_outcome(task, caught)
        claimed = self.store.claim_outcome(task.task_id, outcome, self.clock())
        unconfirmed = outcome.status in (Status.EXPIRED, Status.CANCELED) and task.provider_state is None
        if claimed is not None and unconfirmed and task.provider_job_id:
            # Stop the provider's work (and its bill) on a task nobody will pay for (again, if a cancel asked).
            with contextlib.suppress(DomainError):
                self.providers.get(task.provider).cancel(task.provider_job_id)
        return claimed or self._load(task.task_id)

    def _failure_outcome(self, task: Task, caught: dict[str, Any] | None) -> Outcome:
        state = task.provider_state
        if state is not None and state.is_final and state.status is not Status.SUCCEEDED:
            error = state.error or JobError(code='provider_error', message=f'The provider reports {state.raw_status}.')
            return Outcome(status=state.status, charge=0, error=error)
        if state is not None:
            message = 'The result could not be stored; every credit was refunded.'
            return Outcome(status=Status.FAILED, charge=0, error=JobError(code='settle_failed', message=message))
        if task.cancel_requested:
            # Before the deadline check: a user's cancel that the provider never confirmed is still a cancel.
            message = 'Canceled; every credit was refunded.'
            return Outcome(status=Status.CANCELED, charge=0, error=JobError(code='canceled', message=message))
        if self.clock() >= task.deadline_at:
            message = 'The provider did not finish before the deadline; every credit was refunded.'
            return Outcome(status=Status.EXPIRED, charge=0, error=JobError(code='deadline_exceeded', message=message))
        name = str((caught or {}).get('Error') or '')
        code = 'provider_unavailable' if name == ProviderUnavailable.__name__ else 'internal_error'
        message = 'The provider could not be reached.' if code == 'provider_unavailable' else 'The task failed.'
        return Outcome(status=Status.FAILED, charge=0, error=JobError(code=code, message=message))

    def _complete(self, task: Task, *, wake: bool) -> Task:
        """Carry out the claimed outcome: capture or release through the ledger, then the final status."""
        outcome = task.outcome
        if outcome is None or task.is_final:
            return task
        if outcome.status is Status.SUCCEEDED:
            settlement = self.ledger.capture(task.account_id, task_id=task.task_id, amount=outcome.charge)
        else:
            settlement = self.ledger.release(task.account_id, task_id=task.task_id)
        done = self.store.complete(
            task, outcome, charged=settlement.captured, refunded=settlement.released, now=self.clock()
        )
        if wake and task.token:
            with contextlib.suppress(Exception):
                self.workflow.resume(task.token)
        logger.info('task finished', extra={'task_id': task.task_id, 'status': outcome.status.value})
        return done or self._load(task.task_id)

    def _job_input(self, task: Task) -> dict[str, Any]:
        """The input for the provider: upload keys become presigned URLs it can fetch."""
        expires = max(60, int(task.seconds_left(self.clock())) + 600)
        return {
            name: self.media.presigned_get(value, expires_in=expires)
            if isinstance(value, str) and value.startswith(UPLOADS_PREFIX)
            else value
            for name, value in task.input.items()
        }

    def _webhook_url(self, provider: str) -> str:
        return f'{self.public_api_url.rstrip("/")}/webhooks/providers/{provider}' if self.public_api_url else ''
