"""Sessions on moto and DynamoDB Local: refresh tokens rotate, a reused one revokes its session, sign-out
(this session or everywhere) is effective at once, an idle session expires."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from atelier.identity.sessions import (
    RefreshTokenReused,
    SessionRevoked,
    Sessions,
    SessionStore,
    SessionTokens,
)
from atelier.identity.tokens import InvalidToken, Keyring
from tests.integration.ledger.conftest import Backend, FakeClock
from tests.support.dynamodb_local import DynamoDBLocal

RING = Keyring.parse('integration-test-key-of-at-least-32-chars', stage='test')


def sessions(backend: Backend, table: str, clock: FakeClock) -> Sessions:
    store = SessionStore(table, backend.client, refresh_ttl_seconds=7 * 86400, clock=clock)
    return Sessions(store, lambda: RING, access_ttl_seconds=900, clock=clock)


@pytest.fixture
def world(ledger_backend: Backend) -> tuple[Sessions, FakeClock, Backend, str]:
    table, clock = ledger_backend.new_table(), FakeClock()
    return sessions(ledger_backend, table, clock), clock, ledger_backend, table


def test_a_sign_in_gives_tokens_that_authenticate(world):
    service, *_ = world
    tokens = service.start('acct_1')
    assert (tokens.account_id, tokens.expires_in) == ('acct_1', 900)
    claims = service.authenticate(tokens.access_token)
    assert claims.account_id == 'acct_1'


def test_a_refresh_rotates_and_the_old_refresh_token_then_revokes_the_session(world):
    service, *_ = world
    first = service.start('acct_1')
    second = service.refresh(first.refresh_token)
    third = service.refresh(second.refresh_token)
    assert len({first.refresh_token, second.refresh_token, third.refresh_token}) == 3
    service.authenticate(third.access_token)
    # When the rotated token is presented again (a copy held by a thief, or a client bug)
    with pytest.raises(RefreshTokenReused):
        service.refresh(first.refresh_token)
    # Then the whole session is revoked: its newest refresh and access tokens no longer work
    with pytest.raises(SessionRevoked):
        service.refresh(third.refresh_token)
    with pytest.raises(SessionRevoked):
        service.authenticate(third.access_token)


@pytest.mark.ddb_local
def test_a_token_rotated_long_ago_is_still_recognised_as_reused(world):
    service, *_ = world
    first = service.start('acct_1')
    latest = first
    for _ in range(25):
        latest = service.refresh(latest.refresh_token)
    with pytest.raises(RefreshTokenReused):
        service.refresh(first.refresh_token)
    with pytest.raises(SessionRevoked):
        service.authenticate(latest.access_token)


def test_concurrent_refreshes_with_one_token_let_at_most_one_through(dynamodb_local: DynamoDBLocal):
    # (DynamoDB Local: moto's conditional writes are not atomic under concurrency)
    backend = Backend('ddb_local', dynamodb_local.client(), dynamodb_local.client)
    service = sessions(backend, backend.new_table(), FakeClock())
    tokens = service.start('acct_1')

    def refresh(_: int) -> SessionTokens | Exception:
        try:
            return service.refresh(tokens.refresh_token)
        except InvalidToken as refused:
            return refused

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(refresh, range(4)))
    # (the winner's write may even lose to a loser's revocation: then none got through)
    assert sum(isinstance(o, SessionTokens) for o in outcomes) <= 1
    assert all(isinstance(o, RefreshTokenReused) for o in outcomes if not isinstance(o, SessionTokens))
    # and a token used twice signs the session out, whoever won
    with pytest.raises(SessionRevoked):
        service.authenticate(tokens.access_token)


@pytest.mark.parametrize(
    'token',
    ['', 'rt1.a.b', 'rt1.acct_1.ses_x.secret', 'rt2.acct_1.ses_1.s', 'rt1.acct 1.ses.s', 'x' * 600],
)
def test_refresh_tokens_that_were_never_issued_are_refused_and_revoke_nothing(world, token):
    service, *_ = world
    tokens = service.start('acct_1')
    session_id = service.authenticate(tokens.access_token).session_id
    forged = f'rt1.acct_1.{session_id}.not-the-secret'
    for bad in (token, forged):
        with pytest.raises(InvalidToken):
            service.refresh(bad)
    service.authenticate(tokens.access_token)  # still signed in


def test_logout_ends_this_session_and_logout_everywhere_ends_them_all(world):
    service, *_ = world
    phone, tablet, laptop = (service.start('acct_1') for _ in range(3))
    other = service.start('acct_2')
    # When the phone signs out
    assert service.end(service.authenticate(phone.access_token)) == 1
    with pytest.raises(SessionRevoked):
        service.authenticate(phone.access_token)
    with pytest.raises(SessionRevoked):
        service.refresh(phone.refresh_token)
    service.authenticate(tablet.access_token)
    # When the tablet signs out everywhere
    assert service.end(service.authenticate(tablet.access_token), everywhere=True) == 2
    for gone in (tablet, laptop):
        with pytest.raises(SessionRevoked):
            service.authenticate(gone.access_token)
    # Then another account is untouched
    service.authenticate(other.access_token)


def test_an_idle_session_expires_and_an_access_token_expires_sooner(world):
    service, clock, *_ = world
    tokens = service.start('acct_1')
    clock.advance(minutes=16)
    with pytest.raises(InvalidToken) as expired:
        service.authenticate(tokens.access_token)
    assert expired.value.code == 'token_expired'
    fresh = service.refresh(tokens.refresh_token)
    service.authenticate(fresh.access_token)
    clock.advance(days=8)
    with pytest.raises(InvalidToken):
        service.refresh(fresh.refresh_token)


def test_the_refresh_secret_is_stored_only_hashed(world):
    service, _, backend, table = world
    tokens = service.start('acct_1')
    secret = tokens.refresh_token.rsplit('.', 1)[1]
    items = backend.client.scan(TableName=table)['Items']
    assert items and secret not in str(items)
