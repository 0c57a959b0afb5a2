"""Device sign-in opens the account and its welcome grant in one transaction, once per device."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from atelier.identity.devices import DeviceDirectory
from atelier.identity.service import WelcomeGrant, sign_in_device
from atelier.ledger import LotKind
from tests.integration.ledger.conftest import START, Backend, FakeClock
from tests.support.dynamodb_local import DynamoDBLocal


def sign_in(backend: Backend, table: str, device_id: str, welcome: WelcomeGrant, clock: FakeClock) -> str:
    session = sign_in_device(
        device_id,
        ledger=backend.ledger(table, clock=clock),
        devices=DeviceDirectory(table, backend.client),
        token_key='test-key',
        token_ttl_seconds=60,
        welcome=welcome,
        now=clock,
    )
    return session.account_id


def test_a_new_device_gets_its_welcome_credits_once(ledger_backend: Backend):
    # Given a welcome grant of 50 credits valid for 7 days
    table, clock = ledger_backend.new_table(), FakeClock()
    welcome = WelcomeGrant(50, timedelta(days=7))
    # When a device signs in twice
    first = sign_in(ledger_backend, table, 'device-welcome-0001', welcome, clock)
    second = sign_in(ledger_backend, table, 'device-welcome-0001', welcome, clock)
    # Then it is one account, credited once with promo credit that expires in 7 days
    ledger = ledger_backend.ledger(table, clock=clock)
    assert first == second
    assert ledger.get_account(first).available == 50
    [lot] = ledger.list_lots(first)
    assert (lot.kind, lot.expires_at) == (LotKind.PROMO, START + timedelta(days=7))
    assert [(e.kind, e.amount) for e in ledger.list_entries(first).items] == [('grant', 50)]
    # And once the week is over, the welcome credit is gone
    clock.advance(days=8)
    ledger.expire(clock())
    assert ledger.get_account(first).available == 0


def test_a_zero_welcome_grant_opens_an_empty_account(ledger_backend: Backend):
    table, clock = ledger_backend.new_table(), FakeClock()
    account_id = sign_in(ledger_backend, table, 'device-nowelcome-01', WelcomeGrant(0), clock)
    ledger = ledger_backend.ledger(table, clock=clock)
    assert ledger.get_account(account_id).available == 0
    assert ledger.list_entries(account_id).items == ()


@pytest.mark.ddb_local
def test_concurrent_sign_ins_of_one_device_make_one_account_and_one_grant(dynamodb_local: DynamoDBLocal):
    # Given one device signing in from 10 threads at once, with a welcome grant (DynamoDB Local: moto's
    # transactions are not atomic under concurrency)
    backend = Backend('ddb_local', dynamodb_local.client(), dynamodb_local.client)
    table, clock = backend.new_table(), FakeClock()
    welcome = WelcomeGrant(25)
    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(pool.map(lambda _: sign_in(backend, table, 'device-race-000001', welcome, clock), range(10)))
    # Then every sign-in names the same account, which got the welcome credits once
    assert len(set(ids)) == 1
    assert backend.ledger(table, clock=clock).get_account(ids[0]).available == 25
