"""The fal.ai adapter: fal's queue API (https://docs.fal.ai/model-apis/model-endpoints/queue, the
reference doc's F1-F11).

- Submit: ``POST {api_base}/{model_id}?fal_webhook={url}`` with ``Authorization: Key {token}`` and the
  model's input as the body. ``X-Fal-Request-Timeout`` is fal's *start* timeout only (F4, fal-ai/fal
  PR#776): a request not started by then ends with a 504 and ``X-Fal-Request-Timeout-Type: user``
  (taken as ``expired``, not billed), but one that starts in time runs to its end, however long. So it
  carries the task's time left minus the model's ``expected_run_seconds`` (catalog limits): a request
  that could start only too late to finish before our deadline is dropped by fal, unbilled. With less
  time left than that, nothing is sent (:class:`~atelier.providers.base.StartTooLate`). A request that
  still finishes after its task ended (it ran long, or a cancel was only a request) has its result's
  cost recorded on the task all the same, credits untouched (see ``TaskService.handle_webhook``).
  fal answers ``request_id`` and the request's ``status_url``, ``response_url`` and ``cancel_url``; those
  URLs name the model's app (``fal-ai/flux``), not the model (``fal-ai/flux/dev``), so they are kept in the
  :mod:`~atelier.providers.journal` by request id and used as given, never rebuilt (F1, F2). The token is
  sent only to URLs on the API base's origin.
- Status: ``GET status_url``: ``IN_QUEUE`` (with ``queue_position``, shown on the task) -> submitted,
  ``IN_PROGRESS`` -> running, ``COMPLETED`` -> the result decides. fal has no ``FAILED`` status: a job
  that failed is ``COMPLETED`` and its result answers the error (TanStack/ai PR#396).
- Result: ``GET response_url``. The outcome is settled from the fetched result, never from a status
  string or a webhook's ``status`` alone (reference, headline 3): 200 = succeeded (its files are the
  outputs, priced by the task service from the task's own input and the outputs delivered; the
  ``x-fal-billable-units`` header is fal's cost, kept on the task, I11); 422 = the model
  refused the input, failed (fal may bill a 422, F10/F11: ``charged_by_provider``); 499 = canceled; 504
  with ``X-Fal-Request-Timeout-Type: user`` = expired (the start timeout); other 5xx from the app =
  failed, never billed; 429/502/503 and an unreachable fal = try again later; 404/410 = fal no longer
  knows the request. 400 ("still in progress") after the status said ``COMPLETED`` is a failure (not
  billed); after a webhook it is a 503 (fal retries the webhook; the poll is the safety net): a
  webhook's body never settles a task.
- Cancel: ``PUT cancel_url`` (F8): ``OK`` = removed from the queue (it never ran: canceled, not billed);
  ``CANCELLATION_REQUESTED`` = the running app was signaled and "decides" (not final: the task keeps
  waiting for the result, which may still be a success, delivered and charged); ``ALREADY_COMPLETED`` =
  the status decides; ``NOT_FOUND`` (or a request not on record) says nothing of how it ended, so it is
  not final, like Cog's 404: the task keeps waiting, and its deadline ends it canceled and refunded.
- Webhooks (F7): completion only, ``{request_id, gateway_request_id, status: OK|ERROR, payload, error,
  payload_error}``, signed with ED25519 (:mod:`.signing`). ``payload`` is null with a ``payload_error``
  when the result could not be serialized (fal-js#153), and ``ERROR`` carries fal's error text: so a
  verified webhook only says "done", and the adapter fetches the result to know how (a fetch that fails
  or finds no result yet answers 503, and fal retries the webhook 10 times over 2 hours; the poll is the
  safety net).
- Internal retries (F3, F9): fal retries a request up to 10 times on runner failures; ``request_id``
  stays, ``gateway_request_id`` changes, and the request may go back to ``IN_QUEUE``. Everything here is
  keyed by ``request_id``, so a retried request is the same job, charged once.

fal has no idempotency key and no way to list requests, so "submit never submits twice" is kept with the
journal as for Replicate: claim before the POST, record the request id as soon as fal answers, poll the
recorded request on a later submit. A POST whose outcome is unknown (sent, then a timeout or a 500/502/504)
cannot be looked up at fal: after ``unresolved_after_seconds`` it is submitted again (logged: fal may run
and bill both; the orphan's webhook names a request no task has, and is answered 404).

Errors shown to users are stable codes with short messages; fal's own error text is logged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from atelier.catalog import Catalog
from atelier.observability import logger
from atelier.providers.base import (
    Job,
    JobError,
    JobState,
    MalformedWebhook,
    ProviderCost,
    ProviderRejected,
    ProviderUnavailable,
    StartTooLate,
    Status,
)
from atelier.providers.common import LazySecret, SecretSource
from atelier.providers.fal import inputs
from atelier.providers.journal import SubmissionJournal, keep_first, submit_once

if TYPE_CHECKING:
    import httpx

    from atelier.providers.fal.signing import FalWebhookVerifier

NAME = 'fal'
DEFAULT_API_BASE = 'https://queue.fal.run'
DEFAULT_JWKS_URL = 'https://rest.alpha.fal.ai/.well-known/jwks.json'
BILLABLE_UNITS = 'x-fal-billable-units'
COST_UNIT = 'fal_billable_units'
_QUEUE_STATUSES = {'IN_QUEUE': Status.SUBMITTED, 'IN_PROGRESS': Status.RUNNING}
#: The result fetch for a webhook (seconds to connect, then per read): with one JWKS fetch
#: (:data:`atelier.providers.fal.signing.FETCH_TIMEOUT_SECONDS`), within the webhook function's Timeout.
WEBHOOK_FETCH_CONNECT_SECONDS, WEBHOOK_FETCH_READ_SECONDS = 2.0, 8.0
#: Answers to a submit after which fal may or may not have queued the request.
_AMBIGUOUS = frozenset({500, 502, 504})
_TRANSIENT = frozenset({429, 502, 503, 504})

_FAILED = JobError(code='provider_error', message='The provider failed to generate the output.')
_REFUSED = JobError(code='provider_rejected_input', message='The provider could not run the model on this input.')
_CANCELED = JobError(code='provider_canceled', message='The provider canceled the job.')
_FILTERED = JobError(code='content_filtered', message="The provider's safety filter blocked the output.")
_START_TIMEOUT = JobError(code='provider_start_timeout', message='The provider could not start the job in time.')


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


class FalProvider:
    """The :class:`~atelier.providers.base.Provider` for fal.ai's queue API."""

    name = NAME

    def __init__(
        self,
        api_base: str,
        *,
        api_token: SecretSource,
        jwks_url: str,
        user_id: str = '',
        catalog: Catalog,
        journal: SubmissionJournal,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = _utcnow,
        verifier: FalWebhookVerifier | None = None,
        unresolved_after_seconds: float = 40.0,
    ) -> None:
        self._base_url = (api_base or DEFAULT_API_BASE).rstrip('/')
        self._token = LazySecret(api_token)
        self._jwks_url = jwks_url or DEFAULT_JWKS_URL
        self._user_id = user_id
        self._catalog = catalog
        self._journal = journal
        self._http = http
        self._clock = clock
        self._verifier = verifier
        self._unresolved_after = timedelta(seconds=unresolved_after_seconds)

    # ------------------------------------------------------------------ the port
    def submit(self, job: Job) -> JobState:
        # fal cannot list requests: an unresolved submit is sent again once it is certainly over (logged).
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
        details = self._journal.recall(NAME, provider_job_id)
        if details is None:
            return JobState.lost(provider_job_id, 'This fal request is not on record.')
        response = self._send('GET', details['status_url'])
        if response.status_code in {404, 410}:
            return JobState.lost(provider_job_id, 'fal no longer knows this request.')
        self._raise_for(response, 'status')
        payload = _json(response)
        raw = str(payload.get('status'))
        if raw == 'COMPLETED':
            return self._result(provider_job_id, details, completed=True)
        status = _QUEUE_STATUSES.get(raw)
        if status is None:
            logger.warning('fal: unknown queue status, taken as running', extra={'status': raw})
            status = Status.RUNNING
        position = payload.get('queue_position')
        return JobState(
            provider_job_id=provider_job_id,
            status=status,
            raw_status=raw,
            queue_position=position
            if status is Status.SUBMITTED and isinstance(position, int) and position >= 0
            else None,
        )

    def cancel(self, provider_job_id: str) -> JobState:
        details = self._journal.recall(NAME, provider_job_id)
        if details is None:
            # An answer that says nothing of how the request ended is not final (the port's contract, as for
            # Cog's 404): the task keeps waiting, and its deadline ends it canceled and refunded.
            logger.warning('fal: cancel of a request not on record', extra={'request_id': provider_job_id})
            return JobState(provider_job_id=provider_job_id, status=Status.RUNNING, raw_status='not_on_record')
        response = self._send('PUT', details['cancel_url'])
        if response.status_code in _TRANSIENT or response.status_code >= 500:
            raise ProviderUnavailable(f'fal answered {response.status_code} to the cancel.')
        try:
            answer = str(response.json().get('status'))
        except (ValueError, AttributeError):
            answer = ''
        logger.info('fal: cancel answered', extra={'request_id': provider_job_id, 'answer': answer})
        if answer == 'OK':
            # Removed from the queue before it started: it never ran and is not billed.
            return JobState(
                provider_job_id=provider_job_id, status=Status.CANCELED, raw_status='CANCELED', error=_CANCELED
            )
        if answer in {'CANCELLATION_REQUESTED', 'NOT_FOUND'}:
            # Requested: the running app was signaled; it decides, and its result (maybe a success) is the final
            # word. NOT_FOUND says nothing of how the request ended: not final either (the port's contract).
            return JobState(provider_job_id=provider_job_id, status=Status.RUNNING, raw_status=answer)
        return self.poll(provider_job_id)  # ALREADY_COMPLETED (or no answer): the status tells how it ended

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> JobState:
        signed = self.verifier.verify(headers, body)
        try:
            payload = json.loads(body)
        except ValueError:
            raise MalformedWebhook('The webhook body is not JSON.') from None
        if not isinstance(payload, dict) or payload.get('request_id') != signed.request_id:
            raise MalformedWebhook('The webhook body does not name the request its signature covers.')
        request_id = signed.request_id
        if payload.get('gateway_request_id') not in {None, request_id}:
            logger.info('fal: the request was retried inside fal', extra={'request_id': request_id})
        if payload.get('status') not in {'OK', 'ERROR'}:
            raise MalformedWebhook('The webhook status is neither OK nor ERROR.')
        details = self._journal.recall(NAME, request_id)
        if details is None:
            # Not a request of ours (or long forgotten): the task service answers 404 for it.
            return JobState(provider_job_id=request_id, status=Status.FAILED, raw_status=str(payload['status']))
        if payload['status'] == 'ERROR':
            logger.warning(
                'fal: the webhook reports an error',
                extra={
                    'request_id': request_id,
                    'error': payload.get('error'),
                    'payload_error': payload.get('payload_error'),
                },
            )
        # The webhook only says "done": the result says how. A result not ready yet is never settled from the
        # webhook's body (503: fal retries the webhook, and the poll is the safety net).
        return self._result(request_id, details, completed=False)

    # ------------------------------------------------------------------ submitting once
    def _create(self, job: Job, *, attempt: int) -> JobState:
        import httpx

        params = {'fal_webhook': job.webhook_url} if job.webhook_url else None
        start_within = job.deadline_seconds - self._catalog.get(job.model_id).limits.expected_run_seconds
        if start_within < 1:
            self._journal.release(NAME, job.task_id, attempt)
            raise StartTooLate('Too little time is left to run the model before the task deadline.')
        headers = {'X-Fal-Request-Timeout': str(start_within)}
        try:
            response = self._send(
                'POST',
                f'{self._base_url}/{job.provider_model}',
                params=params,
                json=inputs.to_provider(job.input),
                headers=headers,
                wrap=False,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
            self._journal.release(NAME, job.task_id, attempt)
            raise ProviderUnavailable(f'fal is unreachable: {exc}') from exc
        except httpx.HTTPError as exc:  # sent, answer lost: the claim stays open until resolved
            raise ProviderUnavailable(f'fal did not answer the submit: {exc}') from exc
        code = response.status_code
        if code in _AMBIGUOUS:
            raise ProviderUnavailable(f'fal answered {code} to the submit.')
        if code >= 400:
            self._journal.release(NAME, job.task_id, attempt)
            if code in _TRANSIENT:
                raise ProviderUnavailable(f'fal answered {code}; trying again later.')
            logger.error('fal: the submit was refused', extra={'status': code, 'detail': response.text[:1000]})
            raise ProviderRejected(f'The provider refused the job ({code}).')
        payload = _json(response)
        request_id = payload.get('request_id')
        if not isinstance(request_id, str) or not request_id:
            raise ProviderUnavailable('fal answered the submit without a request id.')
        urls = {name: payload.get(name) for name in ('status_url', 'response_url', 'cancel_url')}
        if not all(isinstance(url, str) and self._trusted(url) for url in urls.values()):
            # fal queued (and may bill) this request: the claim is never given back, or the next submit
            # would queue another. Without URLs we may send the token to, it cannot be followed: a
            # deployment error (FalApiBase is not the origin fal answers with), never retried.
            self._untrusted(job, request_id, urls)
        # Only what following the request needs: never the user's input (prompts, presigned URLs), which the
        # journal would keep for days beyond the task's erasure. Credits are priced from the task's own input.
        details = {'model_id': job.model_id, **urls}
        self._journal.remember(NAME, request_id, details, self._clock())
        duplicate = keep_first(self._journal, NAME, job.task_id, request_id, cancel=self.cancel, follow=self.poll)
        if duplicate is not None:
            return duplicate
        logger.info('fal: request queued', extra={'task_id': job.task_id, 'request_id': request_id})
        position = payload.get('queue_position')
        return JobState(
            provider_job_id=request_id,
            status=Status.SUBMITTED,
            raw_status=str(payload.get('status') or 'IN_QUEUE'),
            queue_position=position if isinstance(position, int) and position >= 0 else None,
        )

    def _untrusted(self, job: Job, request_id: str, urls: Mapping[str, Any]) -> NoReturn:
        """fal queued ``request_id`` but answered URLs off the API base: keep it, stop it if we can, fail the task."""
        self._journal.record(NAME, job.task_id, request_id)
        logger.error(
            'fal: the request URLs are not on FalApiBase; the task fails (check FalApiBase)',
            extra={'task_id': job.task_id, 'request_id': request_id, 'api_base': self._base_url, **urls},
        )
        cancel_url = urls.get('cancel_url')
        if isinstance(cancel_url, str) and self._trusted(cancel_url):
            try:
                self._send('PUT', cancel_url)
            except ProviderUnavailable:
                logger.warning('fal: could not cancel a request it cannot follow', extra={'request_id': request_id})
        raise ProviderRejected('The provider answered in a way this deployment cannot follow.')

    # ------------------------------------------------------------------ the result decides
    def _result(self, request_id: str, details: Mapping[str, Any], *, completed: bool) -> JobState:
        """The outcome, from the result. ``completed``: fal's status said ``COMPLETED`` (else a webhook did)."""
        import httpx

        if completed:
            response = self._send('GET', details['response_url'])
        else:
            timeout = httpx.Timeout(WEBHOOK_FETCH_READ_SECONDS, connect=WEBHOOK_FETCH_CONNECT_SECONDS)
            response = self._send('GET', details['response_url'], timeout=timeout)
        code = response.status_code
        if code == 200:
            result = _json(response)
            outputs, blocked = inputs.outputs(result), inputs.filtered(result)
            cost = _billable_units(response)
            logger.info(
                'fal: request finished',
                extra={
                    'request_id': request_id,
                    'outputs': len(outputs),
                    'filtered': blocked,
                    'billable_units': cost and cost.amount,
                },
            )
            if blocked and not outputs:
                # Every image was blocked by fal's safety checker (fal ran, and may bill, the model).
                return JobState(
                    provider_job_id=request_id,
                    status=Status.FAILED,
                    raw_status='COMPLETED',
                    error=_FILTERED,
                    charged_by_provider=True,
                    cost=cost,
                )
            return JobState(
                provider_job_id=request_id,
                status=Status.SUCCEEDED,
                raw_status='COMPLETED',
                outputs=outputs,
                cost=cost,
            )
        if code == 400 and completed:  # "still in progress" from a request whose status is COMPLETED: broken
            return self._ended(request_id, response, Status.FAILED, _FAILED, charged=False)
        if code == 400:
            raise ProviderUnavailable('fal reported the request done, but its result is not ready yet.')
        if code in {404, 410}:
            return JobState.lost(request_id, 'fal no longer knows this request.')
        timeout_type = response.headers.get('x-fal-request-timeout-type', '').lower()
        if code == 504 and timeout_type == 'user':
            return self._ended(request_id, response, Status.EXPIRED, _START_TIMEOUT, charged=False)
        if code in _TRANSIENT:
            raise ProviderUnavailable(f'fal answered {code} for the result.')
        if code == 422:
            return self._ended(request_id, response, Status.FAILED, _REFUSED, charged=True)
        if code == 499:
            return self._ended(request_id, response, Status.CANCELED, _CANCELED, charged=False)
        if code >= 500:
            return self._ended(request_id, response, Status.FAILED, _FAILED, charged=False)
        # 401/403: our token; anything else unexpected. Not the job's fault: try again until the deadline.
        logger.error('fal: the result fetch was refused', extra={'status': code, 'detail': response.text[:1000]})
        raise ProviderUnavailable(f'fal answered {code} for the result.')

    def _ended(
        self, request_id: str, response: httpx.Response, status: Status, error: JobError, *, charged: bool
    ) -> JobState:
        logger.warning(
            'fal: request ended without a result',
            extra={
                'request_id': request_id,
                'status': response.status_code,
                'error_type': response.headers.get('x-fal-error-type'),
                'detail': response.text[:1000],
            },
        )
        return JobState(
            provider_job_id=request_id,
            status=status,
            raw_status=str(response.status_code),
            error=error,
            charged_by_provider=charged,
            cost=_billable_units(response),
        )

    # ------------------------------------------------------------------ plumbing
    @property
    def verifier(self) -> FalWebhookVerifier:
        if self._verifier is None:
            from atelier.providers.fal.signing import FalWebhookVerifier

            self._verifier = FalWebhookVerifier(self._jwks_url, user_id=self._user_id)
        return self._verifier

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            # Redirects are not followed: the token goes only where fal's answer says.
            self._http = httpx.Client(timeout=httpx.Timeout(15.0, connect=3.0), follow_redirects=False)
        return self._http

    def _trusted(self, url: str) -> bool:
        """Whether ``url`` is on the API base's origin (the only place the token is sent)."""
        return _origin(url) == _origin(self._base_url)

    def _send(self, method: str, url: str, *, wrap: bool = True, **kwargs: Any) -> httpx.Response:
        import httpx

        if not self._trusted(url):
            raise ProviderUnavailable('A fal URL on record is not on the API base; the token is not sent there.')
        headers = {'Authorization': f'Key {self._token()}', **kwargs.pop('headers', {})}
        if not wrap:
            return self.http.request(method, url, headers=headers, **kwargs)
        try:
            return self.http.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f'fal is unreachable: {exc}') from exc

    @staticmethod
    def _raise_for(response: httpx.Response, what: str) -> None:
        code = response.status_code
        if code in _TRANSIENT or code >= 500:
            raise ProviderUnavailable(f'fal answered {code} for the {what}.')
        if code >= 400:
            logger.error(
                'fal: a request was refused', extra={'what': what, 'status': code, 'detail': response.text[:1000]}
            )
            raise ProviderUnavailable(f'fal answered {code} for the {what}.')


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        payload = response.json()
    except ValueError:
        raise ProviderUnavailable('fal sent a body that is not JSON.') from None
    if not isinstance(payload, dict):
        raise ProviderUnavailable('fal sent a malformed answer.')
    return payload


def _billable_units(response: httpx.Response) -> ProviderCost | None:
    """fal's cost of the request (the ``x-fal-billable-units`` header of the result, TanStack/ai#722)."""
    value = response.headers.get(BILLABLE_UNITS)
    try:
        amount = float(value) if value is not None else None
    except ValueError:
        amount = None
    return ProviderCost(unit=COST_UNIT, amount=amount) if amount is not None and amount >= 0 else None
