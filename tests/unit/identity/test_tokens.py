import base64
import json

import pytest

from atelier.identity.tokens import InvalidToken, issue_token, verify_token

KEY = 'unit-test-key'


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b'=').decode()


def test_a_token_round_trips_to_its_account():
    # Given a token issued for an account
    token = issue_token('acct_1', key=KEY, ttl_seconds=60, now=1_000)
    # When it is verified within its lifetime
    claims = verify_token(token, key=KEY, now=1_030)
    # Then it names that account and its lifetime
    assert (claims.account_id, claims.issued_at, claims.expires_at) == ('acct_1', 1_000, 1_060)


def test_an_expired_token_is_refused():
    token = issue_token('acct_1', key=KEY, ttl_seconds=60, now=1_000)
    with pytest.raises(InvalidToken) as refused:
        verify_token(token, key=KEY, now=1_060)
    assert refused.value.code == 'token_expired'


def test_a_token_signed_with_another_key_is_refused():
    token = issue_token('acct_1', key='another-key', ttl_seconds=60)
    with pytest.raises(InvalidToken, match='signature'):
        verify_token(token, key=KEY)


def test_alg_none_is_refused_even_without_a_signature():
    # Given an unsigned token that claims alg "none", with and without a trailing signature part
    head, body = _b64({'alg': 'none', 'typ': 'JWT'}), _b64({'iss': 'atelier', 'sub': 'acct_1', 'iat': 0, 'exp': 2**40})
    for token in (f'{head}.{body}.', f'{head}.{body}.x'):
        # Then it is never accepted
        with pytest.raises(InvalidToken):
            verify_token(token, key=KEY)


def test_a_tampered_payload_is_refused():
    # Given a valid token whose payload is swapped for another account's
    head, _, signature = issue_token('acct_1', key=KEY, ttl_seconds=60).split('.')
    forged_body = _b64({'iss': 'atelier', 'sub': 'acct_2', 'iat': 0, 'exp': 2**40})
    with pytest.raises(InvalidToken, match='signature'):
        verify_token(f'{head}.{forged_body}.{signature}', key=KEY)


def test_a_non_ascii_signature_is_refused_not_a_crash():
    head, body, _ = issue_token('acct_1', key=KEY, ttl_seconds=60).split('.')
    with pytest.raises(InvalidToken):
        verify_token(f'{head}.{body}.\u00e9', key=KEY)


@pytest.mark.parametrize('token', ['', 'a.b', 'a.b.c.d', '!!!.###.$$$', 'e30.e30.sig', '\u00e9.\u00e9.\u00e9'])
def test_malformed_tokens_are_refused(token: str):
    with pytest.raises(InvalidToken):
        verify_token(token, key=KEY)
