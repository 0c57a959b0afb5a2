"""Helpers shared by the test suites."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar('T')


def wait_until(check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T | None:
    """Call ``check`` until it returns something truthy and return that, or ``None`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    return None


def http_event(
    method: str,
    path: str,
    *,
    body: str | bytes | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    path_parameters: dict[str, str] | None = None,
    base64_body: bool = False,
    route_key: str | None = None,
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, as the gateway sends it."""
    event: dict[str, Any] = {
        'version': '2.0',
        'routeKey': route_key or f'{method} {path}',
        'rawPath': path,
        'rawQueryString': '&'.join(f'{k}={v}' for k, v in (query or {}).items()),
        'headers': {k.lower(): v for k, v in (headers or {}).items()},
        'requestContext': {
            'accountId': '123456789012',
            'apiId': 'test',
            'domainName': 'test.local',
            'domainPrefix': 'test',
            'http': {'method': method, 'path': path, 'protocol': 'HTTP/1.1', 'sourceIp': '127.0.0.1', 'userAgent': ''},
            'requestId': 'req-test',
            'routeKey': route_key or f'{method} {path}',
            'stage': '$default',
            'time': '01/Jan/2026:00:00:00 +0000',
            'timeEpoch': 0,
        },
        'isBase64Encoded': base64_body,
    }
    if query:
        event['queryStringParameters'] = query
    if path_parameters:
        event['pathParameters'] = path_parameters
    if body is not None:
        raw = body.encode() if isinstance(body, str) else body
        event['body'] = base64.b64encode(raw).decode() if base64_body else raw.decode()
    return event
