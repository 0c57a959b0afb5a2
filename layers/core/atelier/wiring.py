"""Composition root: the real adapters, built from settings once per execution environment.

Handlers call these; domain code receives what they return. Tests build their own instances
(with fakes, moto or DynamoDB Local) instead of calling these.
"""

from __future__ import annotations

import hashlib
import hmac
from functools import cache

from atelier.aws import client
from atelier.config import AUTH_TOKEN_SECRET, get_settings
from atelier.identity.devices import DeviceDirectory
from atelier.ledger import DynamoDBLedgerStore, Ledger


def derived_key(purpose: str) -> bytes:
    """A key for ``purpose`` derived from the token secret, so one secret signs all opaque values."""
    secret = get_settings().secret(AUTH_TOKEN_SECRET).encode('utf-8')
    return hmac.new(secret, purpose.encode('utf-8'), hashlib.sha256).digest()


@cache
def ledger() -> Ledger:
    settings = get_settings()
    return Ledger(DynamoDBLedgerStore(client('dynamodb'), settings.ledger_table), cursor_key=derived_key('cursor'))


@cache
def devices() -> DeviceDirectory:
    return DeviceDirectory(get_settings().ledger_table, client('dynamodb'))
