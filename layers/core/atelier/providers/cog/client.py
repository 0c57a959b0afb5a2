"""The Cog adapter: one self-hosted Cog model server (Replicate's open-source prediction server, ``coglet``).

Cog's HTTP API, as coglet 0.23 serves it:

- ``PUT /predictions/{id}`` ``{"input", "webhook", "webhook_events_filter"}`` with ``Prefer:
  respond-async`` starts a prediction under our id (the task id) and answers 202. While that
  prediction runs, the same PUT returns its current state instead of starting another, so submit is
  idempotent and polling is a repeat of the PUT (there is no GET). **Once a prediction has finished,
  coglet forgets it**: a later PUT of the same id starts it again. So the final state is only ever seen
  by webhook (a job without a webhook URL is refused); a poll after the final webhook failed to arrive
  re-runs the (self-hosted, unbilled) prediction, whose own final webhook then brings the result (never
  after a cancel: see below). The request is kept in the :mod:`~atelier.providers.journal` so that the
  repeat is the same request.
- ``POST /predictions/{id}/cancel``: 200 while it runs (the final ``canceled`` follows by webhook), 404
  when Cog does not know it (any more). ``409`` on a PUT: every slot is busy with other predictions
  (retry later).
- Statuses ``starting``/``processing``/``succeeded``/``failed``/``canceled``; outputs are URLs (with
  ``--upload-url``) or ``data:`` URIs, which settle stores in S3 like any URL.

Webhooks are unsigned POSTs of the prediction JSON (coglet retries the final one with backoff), so the
adapter authenticates them itself: the webhook URL it gives Cog carries credentials
``cog:{token}@host`` with ``token = base64url(HMAC-SHA256(secret, "cog-webhook:" + task id))``. HTTP
clients (coglet's included) send URL credentials as ``Authorization: Basic``, a header that reaches
:meth:`CogProvider.parse_webhook` (a query-string token would not: the webhook route passes only
headers and body), and the prediction JSON carries the task id to check the token against. A token
is good for its own task only, and the secret never leaves AWS.

Credits: Cog bills nothing, so a success costs the catalog price of what was delivered (images
returned, at most those asked for); ``metrics.predict_time`` is logged with each final state.

Cancel, and what a 404 means. A 404 on cancel does not say the prediction was canceled: Cog answers it
for a prediction it has forgotten, which is one that *finished* (coglet forgets it at once, while its
final webhook may still be on its way: coglet retries that webhook for about seven minutes) or one lost
in a server restart. So the adapter answers *unknown* (``running``, raw status ``unknown``: not final),
and the task keeps waiting for the final word like after any cancel:

- a final webhook that arrives decides: ``succeeded`` delivers the result and charges it like any
  success; ``failed``/``canceled`` refund everything;
- every cancel (200 or 404) is noted in the journal, and a poll of a canceled prediction never repeats
  the PUT (that would start the prediction the user stopped again, or a second run of one that
  finished): it answers unknown until :data:`CANCEL_GRACE` after the first cancel, then ``canceled``,
  final: Cog keeps no record, so nothing more can be learned, and every credit is refunded. A webhook
  later than that is ignored, as any after a task's final word;
- the task's deadline still ends the wait if it comes first; a task whose cancel was requested then
  ends ``canceled`` too, refunded (:mod:`atelier.tasks.service`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from atelier.catalog import Catalog, UnknownModel
from atelier.observability import logger
from atelier.providers.base import (
    InvalidWebhookSignature,
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
)
from atelier.providers.journal import SubmissionJournal

if TYPE_CHECKING:
    import httpx

NAME = 'cog'
WEBHOOK_USER = 'cog'
WEBHOOK_EVENTS = ('start', 'completed')
#: ``data:`` outputs travel inside the task item (DynamoDB: 400 KB); larger results need ``--upload-url``.
MAX_INLINE_OUTPUT_CHARS = 300_000
#: How long after a cancel a prediction's final webhook is awaited before it is taken as canceled. coglet
#: retries a final webhook 12 times, backing off from 0.2 s to at most 102.4 s: its last try comes about
#: 6 min 50 s after the first (later if tries time out). Ten minutes covers that whole schedule.
CANCEL_GRACE = timedelta(minutes=10)
#: The raw status of a prediction whose fate Cog can no longer tell (a 404 on cancel; a poll after a cancel).
UNKNOWN = 'unknown'
_STATUSES = {
    'starting': Status.SUBMITTED,
    'processing': Status.RUNNING,
    'succeeded': Status.SUCCEEDED,
    'failed': Status.FAILED,
    'canceled': Status.CANCELED,
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def webhook_token(secret: str, task_id: str) -> str:
    """The credential in the webhook URL of ``task_id``'s prediction."""
    digest = hmac.new(secret.encode(), f'cog-webhook:{task_id}'.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip('=')


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` with ``user:password@`` (any credentials it had are replaced)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit('@', 1)[-1]
    return urlunsplit(parts._replace(netloc=f'{user}:{password}@{host}'))


class CogProvider:
    """The :class:`~atelier.providers.base.Provider` for a Cog server at ``base_url``."""

    name = NAME

    def __init__(
        self,
        base_url: str,
        *,
        webhook_secret: SecretSource,
        catalog: Catalog,
        journal: SubmissionJournal,
        http: httpx.Client | None = None,
        clock: Callable[[], datetime] = _utcnow,
        cancel_grace: timedelta = CANCEL_GRACE,
    ) -> None:
        self._base_url = base_url.rstrip('/')
        self._secret = LazySecret(webhook_secret)
        self._catalog = catalog
        self._journal = journal
        self._http = http
        self._clock = clock
        self._cancel_grace = cancel_grace

    # ------------------------------------------------------------------ the port
    def submit(self, job: Job) -> JobState:
        if not job.webhook_url:
            # Cog forgets a finished prediction, so without its final webhook no result could ever be seen.
            raise ProviderRejected('Cog results arrive only by webhook: this environment has no public API URL.')
        request: dict[str, Any] = {'model_id': job.model_id, 'input': job.input, 'webhook': job.webhook_url}
        if not self._journal.claim(NAME, job.task_id, attempt=1, now=self._clock(), request=request):
            recorded = self._journal.get(NAME, job.task_id)
            request = recorded.request if recorded is not None and recorded.request else request
        # The prediction id is the task id: a repeated submit finds the running prediction.
        return self._put(job.task_id, request)

    def poll(self, provider_job_id: str) -> JobState:
        recorded = self._journal.get(NAME, provider_job_id)
        if recorded is None or not recorded.request:
            return JobState.lost(provider_job_id, 'This prediction was never submitted to Cog.')
        if recorded.cancel_requested_at is not None:
            # A repeat PUT would start the canceled prediction again: only its final webhook can decide.
            return self._after_cancel(provider_job_id, recorded.cancel_requested_at)
        return self._put(provider_job_id, recorded.request)

    def cancel(self, provider_job_id: str) -> JobState:
        import httpx

        # Noted first: whatever Cog answers (or if it cannot be reached), no poll may start this prediction again.
        self._journal.note_cancel(NAME, provider_job_id, self._clock())
        try:
            response = self.http.post(f'{self._base_url}/predictions/{provider_job_id}/cancel')
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f'The Cog server is unreachable: {exc}') from exc
        if response.status_code == 404:
            # Cog has forgotten it: finished (its final webhook may be on its way) or lost in a restart.
            logger.info('cog: canceled a prediction Cog does not know', extra={'prediction_id': provider_job_id})
            return JobState(provider_job_id=provider_job_id, status=Status.RUNNING, raw_status=UNKNOWN)
        self._raise_for(response)
        # Asked: the prediction stops at its next chance and reports `canceled` by webhook.
        return JobState(provider_job_id=provider_job_id, status=Status.RUNNING, raw_status='canceling')

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> JobState:
        try:
            payload = json.loads(body)
        except ValueError:
            raise InvalidWebhookSignature('The webhook body is not JSON.') from None
        if not isinstance(payload, dict) or not isinstance(payload.get('id'), str) or not payload['id']:
            raise InvalidWebhookSignature('The webhook does not name a prediction.')
        self._verify(headers, payload['id'])
        recorded = self._journal.get(NAME, payload['id'])
        return self._state(payload, recorded.request if recorded is not None else None)

    # ------------------------------------------------------------------ plumbing
    def _after_cancel(self, provider_job_id: str, canceled_at: datetime) -> JobState:
        """Unknown while the grace runs; then canceled, final (Cog keeps no record to learn more from)."""
        if self._clock() < canceled_at + self._cancel_grace:
            return JobState(provider_job_id=provider_job_id, status=Status.RUNNING, raw_status=UNKNOWN)
        message = 'Canceled: the Cog server sent no final result after the cancel; every credit was refunded.'
        logger.info('cog: no final word after a cancel; taken as canceled', extra={'prediction_id': provider_job_id})
        return JobState(
            provider_job_id=provider_job_id,
            status=Status.CANCELED,
            raw_status=UNKNOWN,
            error=JobError(code='canceled', message=message),
        )

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=httpx.Timeout(10.0, connect=3.0))
        return self._http

    def _verify(self, headers: Mapping[str, str], task_id: str) -> None:
        authorization = next((v for k, v in headers.items() if k.lower() == 'authorization'), '')
        scheme, _, credentials = authorization.partition(' ')
        if scheme.lower() != 'basic' or not credentials:
            raise InvalidWebhookSignature('The webhook carries no credentials.')
        try:
            user, _, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(':')
        except (binascii.Error, ValueError):
            raise InvalidWebhookSignature('The webhook credentials are malformed.') from None
        expected = webhook_token(self._secret(), task_id)
        if user != WEBHOOK_USER or not hmac.compare_digest(password.encode(), expected.encode()):
            raise InvalidWebhookSignature('The webhook credentials are not valid for this prediction.')

    def _put(self, prediction_id: str, request: Mapping[str, Any]) -> JobState:
        import httpx

        body: dict[str, Any] = {'input': request.get('input') or {}}
        webhook = request.get('webhook')
        if isinstance(webhook, str) and webhook:
            token = webhook_token(self._secret(), prediction_id)
            body['webhook'] = with_credentials(webhook, WEBHOOK_USER, token)
            body['webhook_events_filter'] = list(WEBHOOK_EVENTS)
        try:
            response = self.http.put(
                f'{self._base_url}/predictions/{prediction_id}', json=body, headers={'Prefer': 'respond-async'}
            )
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f'The Cog server is unreachable: {exc}') from exc
        self._raise_for(response)
        try:
            payload = response.json()
        except ValueError:
            raise ProviderUnavailable('The Cog server sent a body that is not JSON.') from None
        if not isinstance(payload, dict) or payload.get('id') != prediction_id:
            raise ProviderUnavailable('The Cog server sent a malformed prediction.')
        return self._state(payload, request)

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        code = response.status_code
        if code == 409:
            raise ProviderUnavailable('The Cog server is busy with other predictions; trying again later.')
        if code == 429 or code >= 500:
            raise ProviderUnavailable(f'The Cog server answered {code}.')
        if code >= 400:
            raise ProviderRejected(f'The Cog server refused the prediction ({code}): {response.text[:500]}')

    # ------------------------------------------------------------------ normalizing
    def _state(self, payload: dict[str, Any], request: Mapping[str, Any] | None) -> JobState:
        raw = str(payload.get('status'))
        status = _STATUSES.get(raw)
        if status is None:
            logger.warning('cog: unknown prediction status, taken as running', extra={'status': raw})
            status = Status.RUNNING
        error: JobError | None = None
        outputs: tuple[JobOutput, ...] = ()
        if status is Status.SUCCEEDED:
            urls = output_urls(payload.get('output'))
            inline = sum(len(url) for url in urls if url[:5].lower() == 'data:')
            if inline > MAX_INLINE_OUTPUT_CHARS:
                status, urls = Status.FAILED, []
                message = f'Cog returned {inline} characters of inline output; run it with --upload-url.'
                error = JobError(code='output_too_large', message=message)
            outputs = tuple(JobOutput(url=url, content_type=content_type_for(url)) for url in urls)
        elif status is Status.FAILED:
            error = JobError(code='provider_error', message=str(payload.get('error') or 'The prediction failed.'))
        elif status is Status.CANCELED:
            error = JobError(code='provider_canceled', message='The prediction was canceled.')
        if status.is_final:
            logger.info(
                'cog: prediction finished',
                extra={'prediction_id': payload['id'], 'status': raw, 'predict_time': metric_seconds(payload)},
            )
        return JobState(
            provider_job_id=payload['id'],
            status=status,
            raw_status=raw,
            outputs=outputs,
            error=error,
            actual_credits=self._actual_credits(request, len(outputs)) if status is Status.SUCCEEDED else None,
        )

    def _actual_credits(self, request: Mapping[str, Any] | None, delivered: int) -> int | None:
        data = request.get('input') if request else None
        if request is None or not isinstance(data, dict):
            return None
        try:
            model = self._catalog.get(str(request.get('model_id')))
        except UnknownModel:
            return None
        return delivered_credits(model, data, delivered)
