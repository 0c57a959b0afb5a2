"""The offline stack, up once for the e2e session, driven over real HTTP on 127.0.0.1.

The e2e suite runs in its own pytest process (see the Makefile): the stack points every AWS SDK
in this process at its moto server through ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from infra.local.server import LocalServer


@dataclass
class User:
    account_id: str
    token: str
    http: httpx.Client
    refresh_token: str = ''
    device_id: str = ''
    device_secret: str | None = None

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, headers={'authorization': f'Bearer {self.token}'}, **kwargs)

    def post(self, path: str, json: Any = None, headers: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
        merged = {'authorization': f'Bearer {self.token}', **(headers or {})}
        return self.http.post(path, json=json, headers=merged, **kwargs)


class Stack:
    """What a test can reach: the API over HTTP, the AWS resources on moto, the handlers' log."""

    def __init__(self, server: LocalServer) -> None:
        self.server = server
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def client(self, service: str) -> Any:
        return self.server.stack.client(service)

    def physical_id(self, logical_id: str) -> str:
        return self.server.stack.physical_id(logical_id)

    def invoke(self, logical_id: str, event: Any) -> Any:
        return self.server.stack.invoke(logical_id, event)

    @property
    def invocations(self) -> list[Any]:
        return self.server.stack.runtime.invocations

    def adjust(self, account_id: str, amount: int, *, reason: str = 'e2e test credits') -> dict[str, Any]:
        """Give (or take) credits the way ops do: the AdjustCreditsFunction, invoked through Lambda."""
        event = {
            'account_id': account_id,
            'amount': amount,
            'business_id': uuid.uuid4().hex,
            'reason': reason,
            'actor': 'e2e',
        }
        result: dict[str, Any] = self.invoke('AdjustCreditsFunction', event)
        return result

    def sign_in(self, device_id: str | None = None) -> User:
        """A new device signs up, from an address of its own (sign-ups are limited per source address)."""
        device_id = device_id or f'e2e-device-{uuid.uuid4().hex}'
        response = self.post_from(next_address(), '/v1/auth/device', json={'device_id': device_id})
        assert response.status_code == 200, response.text
        body = response.json()
        return User(
            account_id=body['account_id'],
            token=body['access_token'],
            http=self.http,
            refresh_token=body['refresh_token'],
            device_id=device_id,
            device_secret=body['device_secret'],
        )

    def post_from(self, address: str, path: str, **kwargs: Any) -> httpx.Response:
        """POST from the source address ``address`` (any 127.x.y.z reaches the server on 127.0.0.1)."""
        with httpx.Client(
            base_url=self.url, timeout=30, transport=httpx.HTTPTransport(local_address=address)
        ) as client:
            return client.post(path, **kwargs)


_addresses = itertools.count(1)


def next_address() -> str:
    """Another loopback address, as another client on the internet would have."""
    n = next(_addresses)
    return f'127.1.{n // 250 % 250}.{n % 250 + 1}'


@pytest.fixture(scope='session')
def stack() -> Iterator[Stack]:
    with LocalServer(port=0, schedule_seconds=2.0) as server:
        yield Stack(server)


@pytest.fixture(autouse=True)
def no_access_denied(request: pytest.FixtureRequest) -> Iterator[None]:
    """The IAM check: every AWS call any function, the state machine or a poller made during the test was
    allowed by its own role (the offline endpoint enforces IAM on action and resource). A denial fails the
    test and names the role, action and resource, even where the code under test swallowed the error.
    Tests that provoke a denial on purpose say so with ``@pytest.mark.access_denied_expected``."""
    if 'stack' not in request.fixturenames or request.node.get_closest_marker('access_denied_expected'):
        yield
        return
    stack: Stack = request.getfixturevalue('stack')
    before = len(stack.server.stack.iam.decisions)
    yield
    denied = stack.server.stack.iam.denied(since=before)
    assert not denied, 'AccessDenied offline (would fail in AWS):\n' + '\n'.join(d.message() for d in denied)


def me(user: User) -> dict[str, Any]:
    """``GET /v1/me`` of the user: balance, plan."""
    response = user.get('/v1/me')
    assert response.status_code == 200, response.text
    return dict(response.json())


def ledger_of(user: User) -> list[dict[str, Any]]:
    """The user's ledger entries (``GET /v1/ledger``), newest first."""
    response = user.get('/v1/ledger', params={'limit': 100})
    assert response.status_code == 200, response.text
    return list(response.json()['items'])
