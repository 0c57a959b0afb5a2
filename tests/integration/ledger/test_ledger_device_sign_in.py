"""Device sign-in opens the account and its welcome grant in one transaction, once per device; later sign-ins
need the device secret; new accounts are rate-limited per address and globally."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from atelier.identity.devices import DeviceDirectory, device_digest, device_key
from atelier.identity.service import (
    DeviceSignIn,
    InvalidDeviceSecret,
    SignUpLimits,
    TooManySignUps,
    WelcomeGrant,
    sign_in_device,
)
from atelier.ledger import LotKind
from tests.integration.ledger.conftest import START, Backend, FakeClock
from tests.support.dynamodb_local import DynamoDBLocal

DEFAULT_LIMITS = SignUpLimits()


def sign_in(
    backend: Backend,
    table: str,
    device_id: str,
    welcome: WelcomeGrant,
    clock: FakeClock,
    secret: str | None = None,
    *,
    source_ip: str = '192.0.2.1',
    limits: SignUpLimits = DEFAULT_LIMITS,
) -> DeviceSignIn:
    return sign_in_device(
        device_id,
        secret,
        ledger=backend.ledger(table, clock=clock),
        devices=DeviceDirectory(table, backend.client),
        source_ip=source_ip,
        limits=limits,
        welcome=welcome,
        now=clock,
    )


def test_a_new_device_gets_its_welcome_credits_once(ledger_backend: Backend):
    # Given a welcome grant of 50 credits valid for 7 days
    table, clock = ledger_backend.new_table(), FakeClock()
    welcome = WelcomeGrant(50, timedelta(days=7))
    # When a device signs in twice
    first = sign_in(ledger_backend, table, 'device-welcome-0001', welcome, clock)
    second = sign_in(ledger_backend, table, 'device-welcome-0001', welcome, clock, first.device_secret)
    # Then it is one account, credited once with promo credit that expires in 7 days
    ledger = ledger_backend.ledger(table, clock=clock)
    assert first.account_id == second.account_id and first.device_secret and second.device_secret is None
    first = first.account_id
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
    account_id = sign_in(ledger_backend, table, 'device-nowelcome-01', WelcomeGrant(0), clock).account_id
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
        outcomes = list(pool.map(lambda _: attempt(backend, table, 'device-race-000001', welcome, clock), range(10)))
    # Then one sign-in created the account (and got the secret), which got the welcome credits once; the others,
    # holding no secret, were refused
    winners = [o for o in outcomes if isinstance(o, DeviceSignIn)]
    assert len(winners) == 1 and winners[0].device_secret
    assert all(isinstance(o, InvalidDeviceSecret) for o in outcomes if o not in winners)
    assert backend.ledger(table, clock=clock).get_account(winners[0].account_id).available == 25


def attempt(*args: Any) -> DeviceSignIn | Exception:
    try:
        return sign_in(*args)
    except InvalidDeviceSecret as refused:
        return refused


def test_a_known_device_id_without_its_secret_is_refused(ledger_backend: Backend):
    table, clock = ledger_backend.new_table(), FakeClock()
    first = sign_in(ledger_backend, table, 'device-secret-00001', WelcomeGrant(5), clock)
    for wrong in (None, '', 'ds_not-the-secret', first.device_secret + 'x'):  # type: ignore[operator]
        with pytest.raises(InvalidDeviceSecret):
            sign_in(ledger_backend, table, 'device-secret-00001', WelcomeGrant(5), clock, wrong)
    again = sign_in(ledger_backend, table, 'device-secret-00001', WelcomeGrant(5), clock, first.device_secret)
    assert again.account_id == first.account_id
    assert ledger_backend.ledger(table, clock=clock).get_account(first.account_id).available == 5


def test_a_device_from_before_device_secrets_adopts_one_once(ledger_backend: Backend):
    # Given a device item as it was written before device secrets (no secret_hash)
    table, clock = ledger_backend.new_table(), FakeClock()
    first = sign_in(ledger_backend, table, 'device-legacy-00001', WelcomeGrant(0), clock)
    ledger_backend.client.update_item(
        TableName=table, Key=device_key('device-legacy-00001'), UpdateExpression='REMOVE secret_hash'
    )
    # When it signs in without a secret, it gets one; a second secret-less sign-in is refused
    ledger_backend.client.delete_item(
        TableName=table,
        Key={'pk': {'S': f'ACCT#{first.account_id}'}, 'sk': {'S': f'DEVICE#{device_digest("device-legacy-00001")}'}},
    )
    adopted = sign_in(ledger_backend, table, 'device-legacy-00001', WelcomeGrant(0), clock)
    assert adopted.account_id == first.account_id and adopted.device_secret
    # (and it is listed under its account now, as devices signed up later are)
    listing = {'pk': {'S': f'ACCT#{first.account_id}'}, 'sk': {'S': f'DEVICE#{device_digest("device-legacy-00001")}'}}
    assert 'Item' in ledger_backend.client.get_item(TableName=table, Key=listing)
    with pytest.raises(InvalidDeviceSecret):
        sign_in(ledger_backend, table, 'device-legacy-00001', WelcomeGrant(0), clock)


def test_new_accounts_per_address_are_limited_and_refused_sign_ups_create_nothing(ledger_backend: Backend):
    # Given a limit of 3 new accounts per address and hour
    table, clock = ledger_backend.new_table(), FakeClock()
    limits = SignUpLimits(per_address_per_hour=3, per_minute=100)
    welcome = WelcomeGrant(10)

    def new(n: int, ip: str) -> DeviceSignIn:
        return sign_in(ledger_backend, table, f'device-limit-{ip}-{n:04}', welcome, clock, source_ip=ip, limits=limits)

    # When one address signs up 5 new devices
    made = [new(n, '198.51.100.7') for n in range(3)]
    for n in range(3, 5):
        with pytest.raises(TooManySignUps) as refused:
            new(n, '198.51.100.7')
        assert 0 < refused.value.details['retry_after_seconds'] <= 3600
    # Then 3 accounts exist, the refused ones left no device and no credits; another address still signs up
    ledger = ledger_backend.ledger(table, clock=clock)
    assert sum(ledger.get_account(m.account_id).available for m in made) == 30
    assert DeviceDirectory(table, ledger_backend.client).find('device-limit-198.51.100.7-0003') is None
    assert new(0, '203.0.113.9').account_id
    # And the next hour the address may sign up again; known devices sign in whatever the limit
    assert (
        sign_in(
            ledger_backend,
            table,
            'device-limit-198.51.100.7-0000',
            welcome,
            clock,
            made[0].device_secret,
            source_ip='198.51.100.7',
            limits=limits,
        ).account_id
        == made[0].account_id
    )
    clock.advance(hours=1)
    assert new(9, '198.51.100.7').account_id


def test_an_ipv6_client_is_limited_by_its_slash_64(ledger_backend: Backend):
    table, clock = ledger_backend.new_table(), FakeClock()
    limits = SignUpLimits(per_address_per_hour=2, per_minute=100)
    for n in range(2):
        sign_in(
            ledger_backend,
            table,
            f'device-v6-{n:08}',
            WelcomeGrant(0),
            clock,
            source_ip=f'2001:db8:1:2::{n + 1:x}',
            limits=limits,
        )
    with pytest.raises(TooManySignUps):
        sign_in(
            ledger_backend,
            table,
            'device-v6-99999999',
            WelcomeGrant(0),
            clock,
            source_ip='2001:db8:1:2:ffff:ffff:ffff:1',
            limits=limits,
        )
    assert sign_in(
        ledger_backend, table, 'device-v6-88888888', WelcomeGrant(0), clock, source_ip='2001:db8:1:3::1', limits=limits
    ).account_id


def test_the_global_limit_counts_every_address(ledger_backend: Backend):
    table, clock = ledger_backend.new_table(), FakeClock()
    limits = SignUpLimits(per_address_per_hour=100, per_minute=2, shards=1)
    for n in range(2):
        sign_in(
            ledger_backend,
            table,
            f'device-global-{n:05}',
            WelcomeGrant(0),
            clock,
            source_ip=f'192.0.2.{n}',
            limits=limits,
        )
    with pytest.raises(TooManySignUps) as refused:
        sign_in(
            ledger_backend, table, 'device-global-99999', WelcomeGrant(0), clock, source_ip='192.0.2.99', limits=limits
        )
    assert 0 < refused.value.details['retry_after_seconds'] <= 60
