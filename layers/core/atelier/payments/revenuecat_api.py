"""The RevenueCat REST API v1 adapter: ``GET /v1/subscribers/{app_user_id}`` with a secret API key.

The only module that talks to RevenueCat (httpx, imported when a request is made). The base address comes
from settings (``REVENUECAT_API_BASE``: the local fake offline, ``https://api.revenuecat.com`` when empty).
A test stage asks for the sandbox view (``X-Is-Sandbox: true``), a live stage for the production one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from atelier.payments.errors import PaymentsUnavailable, ProviderRefused

DEFAULT_API_BASE = 'https://api.revenuecat.com'

#: Statuses worth another try (rate limited, RevenueCat or its edge failing).
_RETRYABLE = frozenset({429, 500, 502, 503, 504})


class RevenueCatApi:
    def __init__(
        self,
        *,
        api_key: str,
        api_base: str = '',
        sandbox: bool = False,
        timeout: float = 10.0,
        attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api_key = api_key
        self._base = (api_base or DEFAULT_API_BASE).rstrip('/')
        self._sandbox = sandbox
        self._timeout = timeout
        self._attempts = max(1, attempts)
        self._sleep = sleep

    def subscriber(self, app_user_id: str) -> dict[str, Any]:
        """The subscriber object (``{"request_date_ms", "subscriber": {...}}``) of ``app_user_id``.

        RevenueCat creates an empty subscriber for an unknown id ("get or create"), so an unknown id is no error.
        """
        import httpx

        url = f'{self._base}/v1/subscribers/{quote(app_user_id, safe="")}'
        headers = {'Authorization': f'Bearer {self._api_key}', 'Accept': 'application/json'}
        if self._sandbox:
            headers['X-Is-Sandbox'] = 'true'
        problem = ''
        for attempt in range(self._attempts):
            if attempt:
                self._sleep(0.25 * 2 ** (attempt - 1))
            try:
                response = httpx.get(url, headers=headers, timeout=self._timeout)
            except httpx.HTTPError as exc:
                problem = f'{type(exc).__name__}: {exc}'
                continue
            if response.status_code in _RETRYABLE:
                problem = f'HTTP {response.status_code}'
                continue
            if response.status_code >= 400:
                raise ProviderRefused(
                    f'RevenueCat refused GET /v1/subscribers: HTTP {response.status_code}',
                    details={'status': response.status_code, 'body': response.text[:200]},
                )
            try:
                body = response.json()
            except ValueError as exc:
                raise PaymentsUnavailable('RevenueCat sent a body that is not JSON.') from exc
            if not isinstance(body, dict) or not isinstance(body.get('subscriber'), dict):
                raise PaymentsUnavailable('RevenueCat sent no subscriber object.')
            return body
        raise PaymentsUnavailable(f'RevenueCat is not available right now ({problem}); try again.')
