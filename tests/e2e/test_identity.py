"""Device sign-in, bearer tokens and /v1/me over HTTP on the offline stack."""

import base64
import json
import time

import pytest

from atelier.identity.tokens import issue_token
from infra.local.stack import LOCAL_SECRETS
from tests.e2e.conftest import Stack

LOCAL_KEY = LOCAL_SECRETS['auth-token-secret']


def test_the_same_device_signs_in_to_the_same_account(stack: Stack):
    # Given a device that signs in twice
    first = stack.http.post('/v1/auth/device', json={'device_id': 'device-identity-0001'})
    second = stack.http.post('/v1/auth/device', json={'device_id': 'device-identity-0001'})
    other = stack.http.post('/v1/auth/device', json={'device_id': 'device-identity-0002'})
    # Then both sign-ins name one account, with a usable token each, and another device gets another account
    assert first.status_code == second.status_code == 200
    assert first.json()['account_id'] == second.json()['account_id'] != other.json()['account_id']
    assert first.json()['expires_in'] > 0
    for body in (first.json(), second.json()):
        me = stack.http.get('/v1/me', headers={'authorization': f'Bearer {body["token"]}'})
        assert me.json()['account_id'] == body['account_id']


def test_me_shows_plan_balances_and_limits(stack: Stack):
    user = stack.sign_in()
    response = user.get('/v1/me')
    assert response.status_code == 200
    assert response.json() == {
        'account_id': user.account_id,
        'plan': 'free',
        'balance': {'available': 0, 'held': 0},
        'limits': {'max_concurrent_tasks': 2},
    }


def _none_alg_token(account_id: str) -> str:
    def b64(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b'=').decode()

    claims = {'iss': 'atelier', 'sub': account_id, 'iat': int(time.time()), 'exp': int(time.time()) + 600}
    return f'{b64({"alg": "none", "typ": "JWT"})}.{b64(claims)}.'


@pytest.mark.parametrize('case', ['missing', 'not-bearer', 'garbage', 'expired', 'other-key', 'alg-none'])
def test_bad_tokens_get_401(stack: Stack, case: str):
    user = stack.sign_in()
    expired = issue_token(user.account_id, key=LOCAL_KEY, ttl_seconds=60, now=time.time() - 120)
    headers = {
        'missing': {},
        'not-bearer': {'authorization': f'Basic {user.token}'},
        'garbage': {'authorization': 'Bearer not.a.token'},
        'expired': {'authorization': f'Bearer {expired}'},
        'other-key': {'authorization': f'Bearer {issue_token(user.account_id, key="not-the-key", ttl_seconds=600)}'},
        'alg-none': {'authorization': f'Bearer {_none_alg_token(user.account_id)}'},
    }[case]
    response = stack.http.get('/v1/me', headers=headers)
    assert response.status_code == 401
    assert response.json()['error']['code'] in {'missing_token', 'invalid_token', 'token_expired'}
