import base64
import hashlib
import hmac
import json

import pytest

from atelier.identity.tokens import (
    LOCAL_TOKEN_SECRET,
    InsecureTokenSecret,
    InvalidToken,
    Keyring,
    issue_token,
    key_id,
    verify_token,
)

KEY = 'unit-test-key-unit-test-key-unit-test-key'
RING = Keyring.parse(KEY, stage='test')


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b'=').decode()


def _header(token: str) -> dict[str, object]:
    head = token.split('.')[0]
    return dict(json.loads(base64.urlsafe_b64decode(head + '=' * (-len(head) % 4))))


def test_a_token_round_trips_to_its_account_and_session():
    # Given a token issued for a session of an account
    token = issue_token('acct_1', 'ses_1', keyring=RING, ttl_seconds=60, now=1_000)
    # When it is verified within its lifetime
    claims = verify_token(token, keyring=RING, now=1_030)
    # Then it names that account, session and lifetime, and the key that signed it
    assert (claims.account_id, claims.session_id, claims.issued_at, claims.expires_at) == (
        'acct_1',
        'ses_1',
        1_000,
        1_060,
    )
    assert _header(token) == {'alg': 'HS256', 'typ': 'JWT', 'kid': key_id(KEY)}


def test_an_expired_token_is_refused():
    token = issue_token('acct_1', 'ses_1', keyring=RING, ttl_seconds=60, now=1_000)
    with pytest.raises(InvalidToken) as refused:
        verify_token(token, keyring=RING, now=1_060)
    assert refused.value.code == 'token_expired'


def test_a_key_rotation_keeps_tokens_of_the_old_key_valid_while_it_is_on_the_ring():
    old, new = 'o' * 40, 'n' * 40
    before = issue_token('acct_1', 'ses_1', keyring=Keyring.parse(old, stage='prod'), ttl_seconds=60)
    # During the overlap the new key signs and both verify
    overlap = Keyring.parse(f'{new},{old}', stage='prod')
    during = issue_token('acct_1', 'ses_1', keyring=overlap, ttl_seconds=60)
    assert _header(during)['kid'] == key_id(new)
    assert verify_token(before, keyring=overlap).account_id == verify_token(during, keyring=overlap).account_id
    # Once the old key is dropped, its tokens are refused
    after = Keyring.parse(new, stage='prod')
    verify_token(during, keyring=after)
    with pytest.raises(InvalidToken, match='key'):
        verify_token(before, keyring=after)


def test_a_token_signed_with_another_key_under_our_kid_is_refused():
    token = issue_token('acct_1', 'ses_1', keyring=Keyring.parse('x' * 40, stage='test'), ttl_seconds=60)
    _, body, signature = token.split('.')
    ours = _b64({'alg': 'HS256', 'typ': 'JWT', 'kid': key_id(KEY)})
    with pytest.raises(InvalidToken, match='signature'):
        verify_token(f'{ours}.{body}.{signature}', keyring=RING)


def test_alg_none_is_refused_even_without_a_signature():
    # Given an unsigned token that claims alg "none", with and without a trailing signature part
    head = _b64({'alg': 'none', 'typ': 'JWT', 'kid': key_id(KEY)})
    body = _b64({'iss': 'atelier', 'sub': 'acct_1', 'sid': 's', 'iat': 0, 'exp': 2**40})
    for token in (f'{head}.{body}.', f'{head}.{body}.x'):
        # Then it is never accepted
        with pytest.raises(InvalidToken):
            verify_token(token, keyring=RING)


def test_a_tampered_payload_is_refused():
    # Given a valid token whose payload is swapped for another account's
    head, _, signature = issue_token('acct_1', 'ses_1', keyring=RING, ttl_seconds=60).split('.')
    forged_body = _b64({'iss': 'atelier', 'sub': 'acct_2', 'sid': 'ses_1', 'iat': 0, 'exp': 2**40})
    with pytest.raises(InvalidToken, match='signature'):
        verify_token(f'{head}.{forged_body}.{signature}', keyring=RING)


def test_a_token_without_a_session_is_refused():
    key = RING.signing
    head = _b64({'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid})
    body = _b64({'iss': 'atelier', 'sub': 'acct_1', 'iat': 0, 'exp': 2**40})
    signature = base64.urlsafe_b64encode(hmac.new(key.secret, f'{head}.{body}'.encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidToken, match='session'):
        verify_token(f'{head}.{body}.{signature.rstrip(b"=").decode()}', keyring=RING)


def test_a_non_ascii_signature_is_refused_not_a_crash():
    head, body, _ = issue_token('acct_1', 'ses_1', keyring=RING, ttl_seconds=60).split('.')
    with pytest.raises(InvalidToken):
        verify_token(f'{head}.{body}.\u00e9', keyring=RING)


@pytest.mark.parametrize('token', ['', 'a.b', 'a.b.c.d', '!!!.###.$$$', 'e30.e30.sig', '\u00e9.\u00e9.\u00e9'])
def test_malformed_tokens_are_refused(token: str):
    with pytest.raises(InvalidToken):
        verify_token(token, keyring=RING)


@pytest.mark.parametrize('secret', ['', ' , ', LOCAL_TOKEN_SECRET, 'short-secret', f'{"n" * 40},{LOCAL_TOKEN_SECRET}'])
def test_a_deployed_stage_refuses_a_missing_short_or_local_secret(secret: str):
    with pytest.raises(InsecureTokenSecret):
        Keyring.parse(secret, stage='prod')


def test_the_local_stage_takes_the_documented_secret():
    assert Keyring.parse(LOCAL_TOKEN_SECRET, stage='local').signing.kid == key_id(LOCAL_TOKEN_SECRET)
