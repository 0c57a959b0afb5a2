"""Outside identities on moto and DynamoDB Local: one account per identity, opened once with its welcome
credits however many sign-ins race; linking keeps the account's credits and never takes another's identity."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from atelier.identity.identities import IdentityAlreadyLinked, IdentityDirectory, sign_in_identity
from atelier.identity.oidc import VerifiedIdentity
from atelier.identity.service import SignUpLimits, TooManySignUps, WelcomeGrant
from tests.integration.ledger.conftest import Backend, FakeClock
from tests.support.dynamodb_local import DynamoDBLocal


def person(subject: str, issuer: str = 'https://issuer.example') -> VerifiedIdentity:
    return VerifiedIdentity(issuer=issuer, subject=subject, email=None, email_verified=False, provider='test')


def sign_in(backend: Backend, table: str, who: VerifiedIdentity, clock: FakeClock, **options: object) -> str:
    options.setdefault('limits', SignUpLimits())
    options.setdefault('welcome', WelcomeGrant(30))
    return sign_in_identity(
        who,
        ledger=backend.ledger(table, clock=clock),
        identities=IdentityDirectory(table, backend.client),
        source_ip='192.0.2.10',
        now=clock,
        **options,  # type: ignore[arg-type]
    )


def test_an_identity_opens_one_account_with_its_welcome_credits_once(ledger_backend: Backend):
    table, clock = ledger_backend.new_table(), FakeClock()
    first = sign_in(ledger_backend, table, person('alice'), clock)
    assert sign_in(ledger_backend, table, person('alice'), clock) == first
    assert sign_in(ledger_backend, table, person('alice', 'https://other.example'), clock) != first
    assert ledger_backend.ledger(table, clock=clock).get_account(first).available == 30


@pytest.mark.ddb_local
def test_concurrent_first_sign_ins_of_one_identity_reach_one_account(dynamodb_local: DynamoDBLocal):
    # (DynamoDB Local: moto's transactions are not atomic under concurrency)
    backend = Backend('ddb_local', dynamodb_local.client(), dynamodb_local.client)
    table, clock = backend.new_table(), FakeClock()
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = set(pool.map(lambda _: sign_in(backend, table, person('bob'), clock), range(6)))
    assert len(ids) == 1
    assert backend.ledger(table, clock=clock).get_account(ids.pop()).available == 30


def test_a_link_keeps_the_account_and_refuses_an_identity_of_another(ledger_backend: Backend):
    table, clock = ledger_backend.new_table(), FakeClock()
    directory = IdentityDirectory(table, ledger_backend.client)
    ledger = ledger_backend.ledger(table, clock=clock)
    ledger.open_account('acct_device')
    directory.link(person('carol'), 'acct_device', clock().isoformat())
    directory.link(person('carol'), 'acct_device', clock().isoformat())  # again: fine
    assert sign_in(ledger_backend, table, person('carol'), clock) == 'acct_device'
    owner = sign_in(ledger_backend, table, person('dave'), clock)
    with pytest.raises(IdentityAlreadyLinked):
        directory.link(person('dave'), 'acct_device', clock().isoformat())
    assert directory.account_of(person('dave')) == owner


def test_identity_sign_ups_count_against_the_address_limit(ledger_backend: Backend):
    table, clock = ledger_backend.new_table(), FakeClock()
    limits = SignUpLimits(per_address_per_hour=2, per_minute=100)
    for name in ('e1', 'e2'):
        sign_in(ledger_backend, table, person(name), clock, limits=limits)
    with pytest.raises(TooManySignUps):
        sign_in(ledger_backend, table, person('e3'), clock, limits=limits)
    assert IdentityDirectory(table, ledger_backend.client).account_of(person('e3')) is None
    assert sign_in(ledger_backend, table, person('e1'), clock, limits=limits)  # known identities always sign in
