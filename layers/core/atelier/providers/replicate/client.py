"""The Replicate adapter: hosted predictions over Replicate's HTTP API.

- Submit: ``POST /v1/models/{owner}/{name}/predictions`` (official models) or ``POST /v1/predictions``
  with ``version`` (``owner/name:version``), ``Prefer: respond-async``, ``Cancel-After`` = the task's
  time left (so Replicate itself stops - ``aborted``, not billed - a prediction that could not start in
  time), webhook events ``start`` and ``completed``.
- Poll: ``GET /v1/predictions/{id}``; cancel: ``POST /v1/predictions/{id}/cancel``.
- Webhooks: Standard Webhooks signed with the account's ``whsec_`` secret (:mod:`atelier.providers.signing`).

Replicate has no idempotency key, so "submit never submits twice" is kept with the
:mod:`~atelier.providers.journal`: the task's submission is claimed before the POST and the prediction
id recorded as soon as Replicate answers; a later submit of the task polls the recorded prediction.
When a POST's outcome is unknown (a timeout after the request was sent, a 500/502/504), the claim stays
open and the next submit looks for the prediction among the account's recent ones (``GET
/v1/predictions?created_after=``), recognized by the task id in its webhook URL
(``?atelier_task={task_id}``); only once that finds nothing ``unresolved_after_seconds`` after the claim
(longer than any request of the earlier attempt can last) does it submit again.

Statuses: ``starting`` -> submitted, ``processing`` -> running, ``succeeded``, ``failed``, ``canceled``,
``aborted`` (the deadline passed before the prediction started: not billed) -> expired. A status this
adapter does not know is taken as still running, so a new status never fails a task by itself.
Cost: Replicate bills hardware time (``metrics.predict_time``, logged with each final state), credits
follow the catalog price of what was delivered: an image model that returns fewer images than asked
(a safety filter) costs only those.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from atelier.catalog import Catalog, ModelSpec
from atelier.observability import logger
from atelier.providers import signing
from atelier.providers.base import (
    Job,
    JobError,
    JobOutput,
    JobState,
    ProviderRejected,
    ProviderUnavailable,
    Status,
)
from atelier.providers.common import (
    LazySecret,
    SecretSource,
    content_type_for,
    delivered_credits,
    metric_seconds,
    output_urls,
    signed_prediction,
)
from atelier.providers.journal import Submission, SubmissionJournal, keep_first, submit_once
from atelier.providers.replicate import inputs

if TYPE_CHECKING:
    import httpx

NAME = 'replicate'
DEFAULT_API_BASE = 'https://api.replicate.com'
#: The query parameter of the webhook URL that names the task (how an unresolved submit is found again).
TASK_MARKER = 'atelier_task'
WEBHOOK_EVENTS = ('start', 'completed')
_STATUSES = {
    'starting': Status.SUBMITTED,
    'processing': Status.RUNNING,
    'succeeded': Status.SUCCEEDED,
    'failed': Status.FAILED,
    'canceled': Status.CANCELED,
    'aborted': Status.EXPIRED,
}
#: Answers to a create after which Replicate may or may not have created the prediction.
_AMBIGUOUS = frozenset({500, 502, 504})


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ReplicateProvider:
    """The :class:`~atelier.providers.base.Provider` for Replicate's hosted API."""

    name = NAME

    def __init__(
        self,
        api_base: str,
        *,
        api_token: SecretSource,
        webhook_secret: SecretSource,
        catalog: Catalog,
        journal: SubmissionJournal,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = _utcnow,
        unresolved_after_seconds: float = 40.0,
        lookup_pages: int = 5,
    ) -> None:
        self._base_url = (api_base or DEFAULT_API_BASE).rstrip('/')
        self._token = LazySecret(api_token)
        self._secret = LazySecret(webhook_secret)
        self._catalog = catalog
        self._journal = journal
        self._http = http
        self._clock = clock
        self._unresolved_after = timedelta(seconds=unresolved_after_seconds)
        self._lookup_pages = lookup_pages

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
            find=lambda record: self._found(job, record),
        )

    def poll(self, provider_job_id: str) -> JobState:
        payload = self._call('GET', f'/v1/predictions/{provider_job_id}', missing_ok=True)
        if payload is None:
            return JobState.lost(provider_job_id, 'Replicate no longer knows this prediction.')
        return self._state(payload)

    def cancel(self, provider_job_id: str) -> JobState:
        payload = self._call('POST', f'/v1/predictions/{provider_job_id}/cancel', missing_ok=True)
        return self.poll(provider_job_id) if payload is None else self._state(payload)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> JobState:
        signing.verify(self._secret(), headers, body)
        return self._state(signed_prediction(body))

    # ------------------------------------------------------------------ submitting once
    def _found(self, job: Job, record: Submission) -> JobState | None:
        """An earlier submit holds the claim without a prediction id: its prediction, if Replicate lists it."""
        found = self._find(job, since=record.claimed_at)
        if found is None:
            return None
        job_id = self._journal.record(NAME, job.task_id, found['id'])
        return self._state(found) if job_id == found['id'] else self.poll(job_id)

    def _create(self, job: Job, *, attempt: int) -> JobState:
        import httpx

        model, version = inputs.split_model(job.provider_model)
        body: dict[str, Any] = {'input': inputs.to_provider(model, job.input)}
        if version:
            path, body['version'] = '/v1/predictions', version
        else:
            path = f'/v1/models/{model}/predictions'
        if job.webhook_url:
            body['webhook'] = self._webhook_url(job)
            body['webhook_events_filter'] = list(WEBHOOK_EVENTS)
        headers = {'Prefer': 'respond-async', 'Cancel-After': f'{max(5, job.deadline_seconds)}s'}
        try:
            response = self._request('POST', path, json=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # nothing was sent
            self._journal.release(NAME, job.task_id, attempt)
            raise ProviderUnavailable(f'Replicate is unreachable: {exc}') from exc
        except httpx.HTTPError as exc:  # sent, answer lost: the claim stays open until resolved
            raise ProviderUnavailable(f'Replicate did not answer the submit: {exc}') from exc
        code = response.status_code
        if code in _AMBIGUOUS:
            raise ProviderUnavailable(f'Replicate answered {code} to the submit.')
        if code >= 400:
            self._journal.release(NAME, job.task_id, attempt)
            if code in {429, 503}:
                raise ProviderUnavailable(f'Replicate answered {code}; trying again later.')
            if code in {401, 403}:
                logger.error('replicate: the API token was refused', extra={'status': code})
            raise ProviderRejected(f'Replicate refused the prediction ({code}): {response.text[:500]}')
        payload = self._json(response)
        duplicate = keep_first(
            self._journal,
            NAME,
            job.task_id,
            payload['id'],
            cancel=lambda job_id: self._call('POST', f'/v1/predictions/{job_id}/cancel', missing_ok=True),
            follow=self.poll,
        )
        return self._state(payload) if duplicate is None else duplicate

    def _find(self, job: Job, *, since: datetime) -> dict[str, Any] | None:
        """The prediction an earlier submit of ``job`` created, found by its webhook URL (None without one)."""
        if not job.webhook_url:
            return None
        after = (since - timedelta(minutes=5)).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
        target: str = f'/v1/predictions?{urlencode({"created_after": after})}'
        for _ in range(self._lookup_pages):
            page = self._call('GET', target) or {}
            for prediction in page.get('results') or []:
                if isinstance(prediction, dict) and _task_of(prediction) == job.task_id:
                    return prediction
            following = page.get('next')
            if not isinstance(following, str) or not following:
                return None
            target = following
        return None

    @staticmethod
    def _webhook_url(job: Job) -> str:
        parts = urlsplit(job.webhook_url)
        query = urlencode([*parse_qsl(parts.query), (TASK_MARKER, job.task_id)])
        return urlunsplit(parts._replace(query=query))

    # ------------------------------------------------------------------ plumbing
    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=httpx.Timeout(15.0, connect=3.0))
        return self._http

    def _request(self, method: str, target: str, **kwargs: Any) -> httpx.Response:
        url = target if target.startswith(('https://', 'http://')) else self._base_url + target
        headers = {'Authorization': f'Bearer {self._token()}', **kwargs.pop('headers', {})}
        return self.http.request(method, url, headers=headers, **kwargs)

    def _call(self, method: str, target: str, *, missing_ok: bool = False) -> dict[str, Any] | None:
        import httpx

        try:
            response = self._request(method, target)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f'Replicate is unreachable: {exc}') from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderUnavailable(f'Replicate answered {response.status_code}.')
        if response.status_code >= 400:
            raise ProviderRejected(f'Replicate refused the request ({response.status_code}): {response.text[:500]}')
        return self._json(response)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            raise ProviderUnavailable('Replicate sent a body that is not JSON.') from None
        if not isinstance(payload, dict):
            raise ProviderUnavailable('Replicate sent a malformed answer.')
        return payload

    # ------------------------------------------------------------------ normalizing
    def _state(self, payload: Any) -> JobState:
        if not isinstance(payload, dict) or not isinstance(payload.get('id'), str) or not payload['id']:
            raise ProviderUnavailable('Replicate sent a malformed prediction.')
        raw = str(payload.get('status'))
        status = _STATUSES.get(raw)
        if status is None:
            logger.warning('replicate: unknown prediction status, taken as running', extra={'status': raw})
            status = Status.RUNNING
        predict_time = metric_seconds(payload)
        outputs: tuple[JobOutput, ...] = ()
        if status is Status.SUCCEEDED:
            urls = output_urls(payload.get('output'))
            outputs = tuple(JobOutput(url=url, content_type=content_type_for(url)) for url in urls)
        if status.is_final:
            logger.info(
                'replicate: prediction finished',
                extra={'prediction_id': payload['id'], 'status': raw, 'predict_time': predict_time},
            )
        return JobState(
            provider_job_id=payload['id'],
            status=status,
            raw_status=raw,
            outputs=outputs,
            error=_error(status, raw, payload.get('error')),
            # Replicate bills the time a prediction ran, also when it failed or was canceled; never `aborted`.
            charged_by_provider=status in {Status.FAILED, Status.CANCELED} and bool(predict_time),
            actual_credits=self._actual_credits(payload, len(outputs)) if status is Status.SUCCEEDED else None,
        )

    def _model_of(self, payload: dict[str, Any]) -> ModelSpec | None:
        name, version = payload.get('model'), payload.get('version')
        candidates = [
            m
            for m in self._catalog
            if m.provider == NAME and (inputs.split_model(m.provider_model)[0] == name or name is None)
        ]
        exact = [m for m in candidates if inputs.split_model(m.provider_model)[1] == version]
        if exact:
            return exact[0]
        return candidates[0] if candidates and name is not None else None

    def _actual_credits(self, payload: dict[str, Any], delivered: int) -> int | None:
        """Credits for what was delivered; None when the input is gone (Replicate drops it): the task service then
        prices the outputs from the task's own input."""
        model, data = self._model_of(payload), payload.get('input')
        if model is None or not isinstance(data, dict) or not data:
            return None
        family = inputs.to_family(inputs.split_model(model.provider_model)[0], data)
        return delivered_credits(model, family, delivered)


def _task_of(prediction: dict[str, Any]) -> str | None:
    webhook = prediction.get('webhook')
    if not isinstance(webhook, str):
        return None
    values = parse_qs(urlsplit(webhook).query).get(TASK_MARKER)
    return values[0] if values else None


def _error(status: Status, raw: str, error: Any) -> JobError | None:
    if status is Status.FAILED:
        return JobError(code='provider_error', message=str(error or 'Replicate reports the prediction failed.'))
    if status is Status.CANCELED:
        return JobError(code='provider_canceled', message=str(error or 'The prediction was canceled.'))
    if status is Status.EXPIRED:
        message = 'Replicate aborted the prediction: its deadline passed before it could start.'
        return JobError(code=f'provider_{raw}', message=message)
    return None
