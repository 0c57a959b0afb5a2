"""Schemathesis hooks for the contract test (loaded by ``st run`` through ``SCHEMATHESIS_HOOKS``).

Authentication as a client does it: a bearer token from ``POST /v1/auth/device``, renewed before it expires.
``signOut`` and ``deleteMe`` end sessions and accounts, so each of their cases signs up an account of its own
(from another loopback address each time: sign-ups are limited per address).
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from typing import Any

import httpx
import schemathesis

BASE_URL = os.environ['ATELIER_CONTRACT_URL']
DESTRUCTIVE = frozenset({'signOut', 'deleteMe'})
TOKEN_SECONDS = 600  # access tokens live 15 minutes

_addresses = itertools.count(1)


def sign_up() -> str:
    """The access token of a new account, signed up from a loopback address not used before."""
    n = next(_addresses)
    address = f'127.3.{n // 250 % 250}.{n % 250 + 1}'
    with httpx.Client(base_url=BASE_URL, timeout=30, transport=httpx.HTTPTransport(local_address=address)) as http:
        response = http.post('/v1/auth/device', json={'device_id': f'contract-{uuid.uuid4().hex}'})
        response.raise_for_status()
        token: str = response.json()['access_token']
        return token


@schemathesis.auth(refresh_interval=None)
class BearerToken:
    def __init__(self) -> None:
        self.token = ''
        self.issued = 0.0

    def get(self, case: Any, context: Any) -> str:
        if case.operation.definition.raw.get('operationId') in DESTRUCTIVE:
            return sign_up()
        if not self.token or time.monotonic() - self.issued > TOKEN_SECONDS:
            self.token, self.issued = sign_up(), time.monotonic()
        return self.token

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), 'Authorization': f'Bearer {data}'}
