"""The RunPod serverless adapter: a team's own worker on a queue-based RunPod endpoint.

RunPod's documented API (https://docs.runpod.io/serverless/endpoints/send-requests,
https://docs.runpod.io/serverless/endpoints/job-states):

- Submit: ``POST {api_base}/v2/{endpoint_id}/run`` with ``Authorization: Bearer {token}`` and
  ``{"input": {...}, "webhook": url, "policy": {"executionTimeout": ms, "ttl": ms}}``; RunPod answers
  ``{"id", "status": "IN_QUEUE"}``. The endpoint id comes from ``RunPodEndpoints`` (catalog model -> endpoint).
  ``executionTimeout`` (longer than 5 s) is the task's time left; it counts from when a worker takes the job,
  so it bounds a run, not the task: the task's deadline (the release step's cancel) does. ``ttl`` (at least
  10 s) is the time left plus :data:`TTL_MARGIN_MS`: RunPod deletes a job at its ttl whatever its state, and
  the cancel, a late status (its cost) and the webhook's retries must still find it. With less than 10 s left
  nothing is sent (:class:`~atelier.providers.base.StartTooLate`).
- Status: ``GET /v2/{endpoint_id}/status/{id}`` answers ``{"id", "status", "delayTime", "executionTime",
  "output"?, "error"?, "workerId"?}``: ``IN_QUEUE`` -> submitted, ``IN_PROGRESS`` -> running, ``COMPLETED``
  -> succeeded (its ``output`` holds the files), ``FAILED`` -> failed (the worker ran, RunPod bills its
  time), ``CANCELLED`` -> canceled, ``TIMED_OUT`` (never picked up before ``ttl``, or no result before
  ``executionTimeout``) -> expired. An unknown status is taken as still running. ``404``: RunPod no longer
  knows the job (results are kept 30 minutes after a ``/run`` job ends).
- Cost: ``executionTime`` (ms, the worker's run) and ``delayTime`` (ms in the queue, cold start included)
  are kept on the task as its :class:`~atelier.providers.base.ProviderCost` (``runpod_execution_ms``).
- Cancel: ``POST /v2/{endpoint_id}/cancel/{id}`` answers the job's status: ``CANCELLED`` is final (a job
  canceled while running was billed for the time it ran); anything else, the status decides.
- Webhooks: RunPod POSTs the same object as ``/status`` to the ``webhook`` URL when the job ends (retried
  twice, 10 s apart). **RunPod does not sign it**, so its body is only a hint: the adapter reads the job id
  from it and asks ``GET /status/{id}`` (authenticated) how the job really is. A forged webhook saying
  ``COMPLETED`` for a job still running, or for a job that is not ours, changes nothing.

Outputs: a worker's ``output`` is whatever its handler returns. This adapter expects a JSON object whose
files are URLs (or ``{"url", "content_type"}`` objects), alone or in lists: ``{"images": [url, ...]}`` for an
image model, ``{"video": url}`` for a video model (a bare URL or a list of URLs is taken too). The worker
uploads them where the team says (RunPod serves no files): those hosts must be listed for ``runpod`` in
``OutputHosts``, or every output is refused (:mod:`atelier.storage.output_policy`).

RunPod has no idempotency key and cannot list jobs, so "submit never submits twice" is kept with the
:mod:`~atelier.providers.journal` as for fal: claim before the POST, remember the job's endpoint by job id as
soon as RunPod answers, follow the recorded job on a later submit; an unknown outcome is submitted again only
once ``unresolved_after_seconds`` have passed (logged: RunPod may run both; the orphan's webhook names a job
no task has, and is answered 404).

Errors shown to users are stable codes with short messages; the worker's own error text is logged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from atelier.observability import logger
from atelier.providers.base import (
    Job,
    JobError,
    JobOutput,
    JobState,
    ProviderCost,
    ProviderRejected,
    ProviderUnavailable,
    StartTooLate,
    Status,
)
from atelier.providers.common import (
    LazySecret,
    SecretSource,
    content_type_for,
    output_urls,
    signed_prediction,
)
from atelier.providers.journal import SubmissionJournal, keep_first, submit_once

if TYPE_CHECKING:
    import httpx

NAME = 'runpod'
DEFAULT_API_BASE = 'https://api.runpod.ai'
COST_UNIT = 'runpod_execution_ms'
#: RunPod's limits on a job's policy (ms): ``ttl`` at least 10 s, ``executionTimeout`` more than 5 s.
MIN_TTL_MS, MIN_EXECUTION_TIMEOUT_MS = 10_000, 5_001
#: Kept past the task's deadline so the job can still be canceled and its status (and cost) read; see the ttl above.
TTL_MARGIN_MS = 120_000
#: The status fetch for a webhook (seconds to connect, then per read): well within the webhook function's Timeout.
WEBHOOK_FETCH_CONNECT_SECONDS, WEBHOOK_FETCH_READ_SECONDS = 2.0, 8.0
_STATUSES = {
    'IN_QUEUE': Status.SUBMITTED,
    'IN_PROGRESS': Status.RUNNING,
    'COMPLETED': Status.SUCCEEDED,
    'FAILED': Status.FAILED,
    'CANCELLED': Status.CANCELED,
    'TIMED_OUT': Status.EXPIRED,
}
#: Answers to a submit after which RunPod may or may not have queued the job.
_AMBIGUOUS = frozenset({500, 502, 504})
_TRANSIENT = frozenset({429, 502, 503, 504})

_FAILED = JobError(code='provider_error', message='The provider failed to generate the output.')
_NO_OUTPUT = JobError(code='provider_no_output', message='The provider finished without an output.')
_CANCELED = JobError(code='provider_canceled', message='The provider canceled the job.')
_TIMED_OUT = JobError(code='provider_timed_out', message='The provider could not run the job in time.')


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RunPodProvider:
    """The :class:`~atelier.providers.base.Provider` for RunPod serverless endpoints (one per catalog model)."""

    name = NAME

    def __init__(
        self,
        api_base: str,
        *,
        endpoints: Mapping[str, str],
        api_token: SecretSource,
        journal: SubmissionJournal,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = _utcnow,
        unresolved_after_seconds: float = 40.0,
    ) -> None:
        self._base_url = (api_base or DEFAULT_API_BASE).rstrip('/')
        self._endpoints = dict(endpoints)
        self._token = LazySecret(api_token)
        self._journal = journal
        self._http = http
        self._clock = clock
        self._unresolved_after = timedelta(seconds=unresolved_after_seconds)

    # ------------------------------------------------------------------ the port
    def submit(self, job: Job) -> JobState:
        return submit_once(
            self._journal,
            NAME,
            job.task_id,
            clock=self._clock,
            unresolved_after=self._unresolved_after,
            create=lambda attempt: self._create(job, attempt=attempt),
            follow=self.poll,
        )

    def poll(self, provider_job_id: str) -> JobState:
        return self._status(provider_job_id)

    def cancel(self, provider_job_id: str) -> JobState:
        details = self._journal.recall(NAME, provider_job_id)
        if details is None:
            # Says nothing of how the job ended: not final (the port's contract); the deadline ends the task.
            logger.warning('runpod: cancel of a job not on record', extra={'job_id': provider_job_id})
            return JobState(provider_job_id=provider_job_id, status=Status.RUNNING, raw_status='not_on_record')
        response = self._send('POST', self._url(details, 'cancel', provider_job_id))
        if response.status_code == 404:
            return JobState(provider_job_id=provider_job_id, status=Status.RUNNING, raw_status='not_found')
        self._raise_for(response, 'cancel')
        answer = str(_json(response).get('status'))
        logger.info('runpod: cancel answered', extra={'job_id': provider_job_id, 'answer': answer[:40]})
        # CANCELLED, or the job had already ended: either way its status says how it ended, and what it cost.
        return self._status(provider_job_id, details=details)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> JobState:
        # RunPod does not sign its webhooks: the body only names a job; its status comes from RunPod itself.
        payload = signed_prediction(body)
        job_id = str(payload['id'])
        details = self._journal.recall(NAME, job_id)
        if details is None:
            # Not a job of ours (or long forgotten): the task service answers 404 for it, and RunPod is not asked.
            return JobState(provider_job_id=job_id, status=Status.FAILED, raw_status='not_on_record')
        import httpx

        timeout = httpx.Timeout(WEBHOOK_FETCH_READ_SECONDS, connect=WEBHOOK_FETCH_CONNECT_SECONDS)
        state = self._status(job_id, details=details, timeout=timeout)
        if state.raw_status != payload.get('status'):
            logger.warning(
                'runpod: the webhook disagrees with the job status (unsigned; the status decides)',
                extra={'job_id': job_id, 'webhook_status': str(payload.get('status'))[:40], 'status': state.raw_status},
            )
        return state

    # ------------------------------------------------------------------ submitting once
    def _create(self, job: Job, *, attempt: int) -> JobState:
        import httpx

        endpoint_id = self._endpoints.get(job.model_id)
        if endpoint_id is None:
            self._journal.release(NAME, job.task_id, attempt)
            raise ProviderRejected(f'No RunPod endpoint is configured for {job.model_id}.')
        lifetime_ms = job.deadline_seconds * 1000
        if lifetime_ms < MIN_TTL_MS:
            self._journal.release(NAME, job.task_id, attempt)
            raise StartTooLate('Too little time is left to run the model before the task deadline.')
        body: dict[str, Any] = {
            'input': job.input,
            # ttl ends the job's life *and deletes it* whatever its state: a margin past the task's deadline keeps it
            # visible to the release step's cancel and to a late status (its cost), and its webhook retries.
            'policy': {
                'executionTimeout': max(lifetime_ms, MIN_EXECUTION_TIMEOUT_MS),
                'ttl': lifetime_ms + TTL_MARGIN_MS,
            },
        }
        if job.webhook_url:
            body['webhook'] = job.webhook_url
        try:
            response = self._send('POST', f'{self._base_url}/v2/{endpoint_id}/run', json=body, wrap=False)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
            self._journal.release(NAME, job.task_id, attempt)
            raise ProviderUnavailable(f'RunPod is unreachable: {exc}') from exc
        except httpx.HTTPError as exc:  # sent, answer lost: the claim stays open until resolved
            raise ProviderUnavailable(f'RunPod did not answer the submit: {exc}') from exc
        code = response.status_code
        if code in _AMBIGUOUS:
            raise ProviderUnavailable(f'RunPod answered {code} to the submit.')
        if code >= 400:
            self._journal.release(NAME, job.task_id, attempt)
            if code in _TRANSIENT:
                raise ProviderUnavailable(f'RunPod answered {code}; trying again later.')
            logger.error('runpod: the submit was refused', extra={'status': code, 'detail': response.text[:1000]})
            raise ProviderRejected(f'The provider refused the job ({code}).')
        payload = _json(response)
        job_id = payload.get('id')
        if not isinstance(job_id, str) or not job_id:
            raise ProviderUnavailable('RunPod answered the submit without a job id.')
        # Only what following the job needs (never the user's input, which the journal would keep for days).
        self._journal.remember(NAME, job_id, {'model_id': job.model_id, 'endpoint_id': endpoint_id}, self._clock())
        duplicate = keep_first(self._journal, NAME, job.task_id, job_id, cancel=self.cancel, follow=self.poll)
        if duplicate is not None:
            return duplicate
        logger.info('runpod: job queued', extra={'task_id': job.task_id, 'job_id': job_id, 'endpoint': endpoint_id})
        return JobState(provider_job_id=job_id, status=Status.SUBMITTED, raw_status=str(payload.get('status')))

    # ------------------------------------------------------------------ the status decides
    def _status(
        self, job_id: str, *, details: Mapping[str, Any] | None = None, timeout: httpx.Timeout | None = None
    ) -> JobState:
        details = details or self._journal.recall(NAME, job_id)
        if details is None:
            return JobState.lost(job_id, 'This RunPod job is not on record.')
        extra: dict[str, Any] = {} if timeout is None else {'timeout': timeout}
        response = self._send('GET', self._url(details, 'status', job_id), **extra)
        if response.status_code in {404, 410}:
            return JobState.lost(job_id, 'RunPod no longer knows this job.')
        self._raise_for(response, 'status')
        payload = _json(response)
        if payload.get('id') not in {None, job_id}:
            raise ProviderUnavailable('RunPod answered the status of another job.')
        raw = str(payload.get('status'))
        status = _STATUSES.get(raw)
        if status is None:
            logger.warning('runpod: unknown job status, taken as running', extra={'status': raw[:40]})
            return JobState(provider_job_id=job_id, status=Status.RUNNING, raw_status=raw)
        if not status.is_final:
            return JobState(provider_job_id=job_id, status=status, raw_status=raw)
        cost = _cost(payload)
        ran = bool(cost and cost.amount > 0)
        logger.info(
            'runpod: job ended',
            extra={
                'job_id': job_id,
                'status': raw,
                'execution_ms': cost and cost.amount,
                'delay_ms': cost and cost.delay_ms,
                'error': str(payload.get('error'))[:1000] if payload.get('error') else None,
            },
        )
        if status is Status.SUCCEEDED:
            outputs = _outputs(payload.get('output'))
            if not outputs:
                logger.error('runpod: COMPLETED without a file output', extra={'job_id': job_id})
                return JobState(
                    provider_job_id=job_id,
                    status=Status.FAILED,
                    raw_status=raw,
                    error=_NO_OUTPUT,
                    charged_by_provider=ran,
                    cost=cost,
                )
            # Credits: the task service prices the outputs delivered from the task's own input.
            return JobState(provider_job_id=job_id, status=Status.SUCCEEDED, raw_status=raw, outputs=outputs, cost=cost)
        error = {Status.FAILED: _FAILED, Status.CANCELED: _CANCELED}.get(status, _TIMED_OUT)
        return JobState(
            provider_job_id=job_id, status=status, raw_status=raw, error=error, charged_by_provider=ran, cost=cost
        )

    # ------------------------------------------------------------------ plumbing
    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            # Redirects are not followed: the token goes only to the API base.
            self._http = httpx.Client(timeout=httpx.Timeout(15.0, connect=3.0), follow_redirects=False)
        return self._http

    def _url(self, details: Mapping[str, Any], operation: str, job_id: str) -> str:
        return f'{self._base_url}/v2/{details["endpoint_id"]}/{operation}/{job_id}'

    def _send(self, method: str, url: str, *, wrap: bool = True, **kwargs: Any) -> httpx.Response:
        import httpx

        headers = {'Authorization': f'Bearer {self._token()}'}
        if not wrap:
            return self.http.request(method, url, headers=headers, **kwargs)
        try:
            return self.http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f'RunPod is unreachable: {exc}') from exc

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        code = response.status_code
        if code >= 400:
            if code not in _TRANSIENT and code < 500:  # 401/403: our token; retried to the deadline
                detail = response.text[:1000]
                logger.error('runpod: a request was refused', extra={'what': what, 'status': code, 'detail': detail})
            raise ProviderUnavailable(f'RunPod answered {code} for the {what}.')


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        raise ProviderUnavailable('RunPod sent a body that is not JSON.') from None
    if not isinstance(payload, dict):
        raise ProviderUnavailable('RunPod sent a malformed answer.')
    return payload


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0 else None


def _cost(payload: Mapping[str, Any]) -> ProviderCost | None:
    """RunPod's measure of the job: ``executionTime`` (ms the worker ran) and ``delayTime`` (ms before it did)."""
    execution = _ms(payload.get('executionTime'))
    if execution is None:
        return None
    return ProviderCost(unit=COST_UNIT, amount=execution, delay_ms=_ms(payload.get('delayTime')))


#: The keys of a worker's ``output`` that hold its files; any other key (an echoed prompt, a preview) is not an
#: output: a URL there could be the user's own (echoed input) and would be copied and charged as a result.
OUTPUT_KEYS = ('images', 'video')
#: What a stored output may be (a worker's declared type is checked, never trusted into S3 as, say, text/html).
MEDIA_TYPES = ('image/', 'video/')


def _file(value: Any) -> JobOutput | None:
    if isinstance(value, dict):
        url, declared = value.get('url'), value.get('content_type')
    else:
        url, declared = value, None
    if not isinstance(url, str) or not output_urls(url):
        return None
    content_type = declared if isinstance(declared, str) and '/' in declared else content_type_for(url)
    content_type = content_type.split(';')[0].strip().lower()
    if not content_type.startswith(MEDIA_TYPES):
        return None
    return JobOutput(url=url, content_type=content_type)


def _outputs(output: Any) -> tuple[JobOutput, ...]:
    """The files of a worker's ``output``: the URLs (or ``{"url"}`` objects) under ``images`` or ``video``, alone or
    in lists, in order; an output that is itself a URL or a list of them is taken too."""
    values = [output[key] for key in OUTPUT_KEYS if key in output] if isinstance(output, dict) else [output]
    found: list[JobOutput] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            file = _file(item)
            if file is not None:
                found.append(file)
    return tuple(found)
