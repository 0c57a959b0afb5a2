"""Device sign-in, sessions (refresh, reuse, logout) and /v1/me over HTTP on the offline stack."""

import base64
import json
import time
import uuid

import pytest

from atelier.identity.tokens import Keyring, issue_token
from infra.local.stack import LOCAL_SECRETS
from tests.e2e.conftest import Stack, User, next_address

LOCAL_RING = Keyring.parse(LOCAL_SECRETS['auth-token-secret'], stage='local')


def me_status(stack: Stack, token: str) -> int:
    return stack.http.get('/v1/me', headers={'authorization': f'Bearer {token}'}).status_code


def test_a_device_signs_in_again_only_with_its_device_secret(stack: Stack):
    # Given a device that signed up (and got its device secret once)
    user = stack.sign_in()
    assert user.device_secret and user.refresh_token
    address = next_address()
    # When the same device id signs in again without the secret, or with another one
    for body in ({'device_id': user.device_id}, {'device_id': user.device_id, 'device_secret': 'ds_guess'}):
        refused = stack.post_from(address, '/v1/auth/device', json=body)
        # Then it is refused, and names why
        assert refused.status_code == 401, refused.text
        assert refused.json()['error']['code'] == 'invalid_device_secret'
    # And with its secret it reaches the same account, with a new session and no new secret
    again = stack.post_from(
        address, '/v1/auth/device', json={'device_id': user.device_id, 'device_secret': user.device_secret}
    )
    assert again.status_code == 200, again.text
    body = again.json()
    assert (body['account_id'], body['device_secret'], body['token_type']) == (user.account_id, None, 'Bearer')
    assert body['expires_in'] == 900
    assert me_status(stack, body['access_token']) == me_status(stack, user.token) == 200


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


def test_refresh_rotates_and_a_reused_refresh_token_signs_the_session_out(stack: Stack):
    user = stack.sign_in()
    first = stack.http.post('/v1/auth/refresh', json={'refresh_token': user.refresh_token})
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated['refresh_token'] != user.refresh_token and rotated['account_id'] == user.account_id
    assert me_status(stack, rotated['access_token']) == 200
    # When the first refresh token is used again
    reused = stack.http.post('/v1/auth/refresh', json={'refresh_token': user.refresh_token})
    assert reused.status_code == 401 and reused.json()['error']['code'] == 'refresh_token_reused'
    # Then the whole session is signed out: its access tokens and its newest refresh token too
    assert me_status(stack, rotated['access_token']) == me_status(stack, user.token) == 401
    later = stack.http.post('/v1/auth/refresh', json={'refresh_token': rotated['refresh_token']})
    assert later.status_code == 401 and later.json()['error']['code'] == 'session_revoked'


def test_logout_signs_out_this_session_and_all_signs_out_every_session(stack: Stack):
    user = stack.sign_in()
    other_session = stack.post_from(
        next_address(), '/v1/auth/device', json={'device_id': user.device_id, 'device_secret': user.device_secret}
    ).json()['access_token']
    third_session = stack.http.post('/v1/auth/refresh', json={'refresh_token': user.refresh_token}).json()
    # When one session signs out
    out = stack.http.post('/v1/auth/logout', headers={'authorization': f'Bearer {other_session}'})
    assert out.status_code == 200 and out.json() == {'revoked_sessions': 1}
    assert me_status(stack, other_session) == 401
    assert me_status(stack, third_session['access_token']) == 200
    # When the remaining one signs out everywhere
    everywhere = stack.http.post(
        '/v1/auth/logout', json={'all': True}, headers={'authorization': f'Bearer {third_session["access_token"]}'}
    )
    assert everywhere.status_code == 200 and everywhere.json() == {'revoked_sessions': 1}
    assert me_status(stack, third_session['access_token']) == 401
    refresh = stack.http.post('/v1/auth/refresh', json={'refresh_token': third_session['refresh_token']})
    assert refresh.status_code == 401


def test_sign_ups_from_one_address_are_limited_and_refused_ones_create_nothing(stack: Stack):
    # Given one address signing up 50 new devices (the stack's limit: 20 per address and hour)
    address = next_address()
    devices = [f'e2e-flood-{uuid.uuid4().hex}' for _ in range(50)]
    accounts_before = count_accounts(stack)
    answers = [stack.post_from(address, '/v1/auth/device', json={'device_id': d}) for d in devices]
    statuses = [a.status_code for a in answers]
    # Then the first 20 get accounts and the other 30 get 429 with Retry-After
    assert statuses == [200] * 20 + [429] * 30, statuses
    refused = answers[-1]
    assert refused.json()['error']['code'] == 'too_many_sign_ups'
    assert 0 < int(refused.headers['retry-after']) <= 3600
    # And exactly 20 accounts were opened (so no welcome credits went anywhere else)
    assert count_accounts(stack) == accounts_before + 20
    # And a refused device id was left unclaimed: from another address it signs up as a new device
    later = stack.post_from(next_address(), '/v1/auth/device', json={'device_id': devices[-1]})
    assert later.status_code == 200 and later.json()['device_secret']


def count_accounts(stack: Stack) -> int:
    table = stack.physical_id('LedgerTable')
    pages = (
        stack.client('dynamodb')
        .get_paginator('scan')
        .paginate(
            TableName=table, FilterExpression='sk = :account', ExpressionAttributeValues={':account': {'S': 'ACCOUNT'}}
        )
    )
    return sum(page['Count'] for page in pages)


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    def b64(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b'=').decode()

    return f'{b64(header)}.{b64(claims)}.'


@pytest.mark.parametrize(
    'case', ['missing', 'not-bearer', 'garbage', 'expired', 'other-key', 'alg-none', 'unknown-session']
)
def test_bad_tokens_get_401(stack: Stack, case: str):
    user: User = stack.sign_in()
    session = json.loads(base64.urlsafe_b64decode(user.token.split('.')[1] + '=='))['sid']
    other_ring = Keyring.parse('not-the-key-not-the-key-not-the-key-42', stage='test')
    now = int(time.time())
    tokens = {
        'expired': issue_token(user.account_id, session, keyring=LOCAL_RING, ttl_seconds=60, now=now - 120),
        'other-key': issue_token(user.account_id, session, keyring=other_ring, ttl_seconds=600),
        'alg-none': _unsigned(
            {'alg': 'none', 'typ': 'JWT', 'kid': LOCAL_RING.signing.kid},
            {'iss': 'atelier', 'sub': user.account_id, 'sid': session, 'iat': now, 'exp': now + 600},
        ),
        'unknown-session': issue_token(user.account_id, 'ses_never_opened', keyring=LOCAL_RING, ttl_seconds=600),
    }
    plain = {
        'missing': {},
        'not-bearer': {'authorization': f'Basic {user.token}'},
        'garbage': {'authorization': 'Bearer not.a.token'},
    }
    headers = plain[case] if case in plain else {'authorization': f'Bearer {tokens[case]}'}
    response = stack.http.get('/v1/me', headers=headers)
    assert response.status_code == 401
    assert response.json()['error']['code'] in {'missing_token', 'invalid_token', 'token_expired', 'session_revoked'}
