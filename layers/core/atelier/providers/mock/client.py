"""The adapter for the mock provider, over HTTP like any real provider (see :mod:`.server`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from atelier.catalog import Catalog
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
from atelier.providers.common import LazySecret, SecretSource, signed_prediction

NAME = 'mock'
_STATUSES = {
    'starting': Status.SUBMITTED,
    'processing': Status.RUNNING,
    'succeeded': Status.SUCCEEDED,
    'failed': Status.FAILED,
    'canceled': Status.CANCELED,
    'aborted': Status.EXPIRED,
}
_CONTENT_TYPES = {'png': 'image/png', 'jpg': 'image/jpeg', 'webp': 'image/webp', 'mp4': 'video/mp4'}


class MockProvider:
    """The :class:`~atelier.providers.base.Provider` for the local mock provider server."""

    name = NAME

    def __init__(
        self, base_url: str, *, webhook_secret: SecretSource, catalog: Catalog, http: httpx.Client | None = None
    ) -> None:
        self._base_url = base_url.rstrip('/')
        self._secret = LazySecret(webhook_secret)  # only webhooks are verified with it: the steps never read it
        self._catalog = catalog
        self._http = http or httpx.Client(timeout=httpx.Timeout(10.0, connect=3.0))

    def submit(self, job: Job) -> JobState:
        body = {'model': job.provider_model, 'input': job.input, 'webhook': job.webhook_url or None}
        # PUT on our own task id: the provider starts at most one prediction per task, however often we retry.
        return self._state(self._call('PUT', f'/predictions/{job.task_id}', body))

    def poll(self, provider_job_id: str) -> JobState:
        payload = self._call('GET', f'/predictions/{provider_job_id}', missing_ok=True)
        if payload is None:
            return JobState.lost(provider_job_id, 'The provider no longer knows this job.')
        return self._state(payload)

    def cancel(self, provider_job_id: str) -> JobState:
        payload = self._call('POST', f'/predictions/{provider_job_id}/cancel', {}, missing_ok=True)
        if payload is None:
            return self.poll(provider_job_id)
        return self._state(payload)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> JobState:
        signing.verify(self._secret(), headers, body)
        return self._state(signed_prediction(body))

    # ------------------------------------------------------------------ plumbing
    def _call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        try:
            response = self._http.request(method, self._base_url + path, json=body)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f'The mock provider is unreachable: {exc}') from exc
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderUnavailable(f'The mock provider answered {response.status_code}.')
        if response.status_code >= 400:
            raise ProviderRejected(f'The mock provider refused the job: {response.text[:500]}')
        return response.json()

    def _state(self, payload: Any) -> JobState:
        if not isinstance(payload, dict) or not isinstance(payload.get('id'), str):
            raise ProviderUnavailable('The mock provider sent a malformed prediction.')
        raw = str(payload.get('status'))
        status = _STATUSES.get(raw)
        if status is None:
            raise ProviderUnavailable(f'The mock provider sent an unknown status {raw!r}.')
        outputs = tuple(
            JobOutput(url=url, content_type=_CONTENT_TYPES.get(url.rsplit('.', 1)[-1], 'application/octet-stream'))
            for url in payload.get('output') or []
            if isinstance(url, str)
        )
        error = None
        if status in {Status.FAILED, Status.CANCELED, Status.EXPIRED}:
            message = str(payload.get('error') or f'The provider reports {raw}.')
            error = JobError(code='provider_error' if status is Status.FAILED else f'provider_{raw}', message=message)
        return JobState(
            provider_job_id=payload['id'],
            status=status,
            raw_status=raw,
            progress=_progress(payload.get('progress')),
            outputs=outputs if status is Status.SUCCEEDED else (),
            error=error,
            charged_by_provider=bool(payload.get('charged')),
            actual_credits=self._actual_credits(payload) if status is Status.SUCCEEDED else None,
        )

    def _actual_credits(self, payload: dict[str, Any]) -> int | None:
        model = next(
            (m for m in self._catalog if m.provider == NAME and m.provider_model == payload.get('model')), None
        )
        metrics, data = payload.get('metrics') or {}, payload.get('input')
        if model is None or not isinstance(data, dict) or not isinstance(metrics, dict):
            return None
        images, seconds = metrics.get('images'), metrics.get('video_seconds')
        return model.actual_cost(
            data,
            images=int(images) if isinstance(images, int | float) else None,
            seconds=float(seconds) if isinstance(seconds, int | float) else None,
        )


def _progress(value: Any) -> float | None:
    if isinstance(value, int | float) and 0 <= value <= 1:
        return float(value)
    return None
