"""Sign in with OpenID Connect over HTTP on the offline stack, with its local issuer (provider ``local``):
refused tokens create nothing, keys rotate without downtime, a device account links an identity and keeps
its credits, an identity belongs to one account."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest

from infra.local.oidc_issuer import LocalOidcIssuer, generate_key
from tests.e2e.conftest import Stack, next_address


def issuer(stack: Stack) -> LocalOidcIssuer:
    service = stack.server.services['oidc']
    assert isinstance(service, LocalOidcIssuer)
    return service


def oidc(stack: Stack, id_token: str, *, nonce: str | None = None, address: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {'provider': 'local', 'id_token': id_token}
    if nonce is not None:
        body['nonce'] = nonce
    return stack.post_from(address or next_address(), '/v1/auth/oidc', json=body)


def accounts_and_identities(stack: Stack) -> tuple[int, int]:
    table = stack.physical_id('LedgerTable')
    items = stack.client('dynamodb').scan(TableName=table, ProjectionExpression='pk, sk')['Items']
    accounts = sum(1 for i in items if i['sk']['S'] == 'ACCOUNT')
    identities = sum(1 for i in items if i['pk']['S'].startswith('IDENTITY#'))
    return accounts, identities


def test_the_providers_are_listed(stack: Stack):
    response = stack.http.get('/v1/auth/providers')
    assert response.status_code == 200
    assert response.json() == {
        'providers': [{'id': 'local', 'issuer': issuer(stack).issuer, 'client_ids': ['atelier-local']}]
    }


def test_an_id_token_from_the_local_issuer_signs_in_to_one_account_per_person(stack: Stack):
    # Given an ID token minted by the issuer's development endpoint, as curl would get it
    subject = f'person-{uuid.uuid4().hex}'
    minted = httpx.post(f'{issuer(stack).issuer}/token', json={'sub': subject, 'email': 'p@example.com'})
    assert minted.status_code == 200
    # When the person signs in with it, then again on another device with a new token
    first = oidc(stack, minted.json()['id_token'])
    second = oidc(stack, issuer(stack).id_token(subject))
    # Then both sign-ins reach the same account, each with a session of its own
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()['account_id'] == second.json()['account_id']
    assert first.json()['token_type'] == 'Bearer' and first.json()['refresh_token'] != second.json()['refresh_token']
    me = stack.http.get('/v1/me', headers={'authorization': f'Bearer {second.json()["access_token"]}'})
    assert me.json()['account_id'] == first.json()['account_id']


def test_a_nonce_is_checked_when_sent(stack: Stack):
    subject = f'apple-like-{uuid.uuid4().hex}'
    token = issuer(stack).id_token(subject, nonce='n-0S6_WzA2Mj')
    assert oidc(stack, token, nonce='another').status_code == 401
    assert oidc(stack, token, nonce='n-0S6_WzA2Mj').status_code == 200


REFUSED = [
    'forged-signature',
    'other-key',
    'expired',
    'wrong-aud',
    'wrong-iss',
    'alg-none',
    'hs256-with-public-key',
    'unknown-kid',
]


@pytest.mark.parametrize('case', REFUSED)
def test_refused_id_tokens_are_401_and_create_nothing(stack: Stack, case: str):
    local = issuer(stack)
    claims = local.claims(f'mallory-{uuid.uuid4().hex}')
    good = local.mint(claims)
    head, _, signature = good.split('.')
    forged_body = local.mint({**claims, 'sub': 'someone-else'}).split('.')[1]
    token = {
        'forged-signature': f'{head}.{forged_body}.{signature}',
        'other-key': local.mint(claims, key=generate_key('RS256'), headers={'kid': local.signing_key.kid}),
        'expired': local.mint({**claims, 'iat': int(time.time()) - 7200, 'exp': int(time.time()) - 3600}),
        'wrong-aud': local.mint({**claims, 'aud': 'someone-elses-app'}),
        'wrong-iss': local.mint({**claims, 'iss': 'https://accounts.google.com'}),
        'alg-none': local.mint(claims, alg='none'),
        'hs256-with-public-key': local.mint(
            claims, key=local.public_pem(), alg='HS256', headers={'kid': local.signing_key.kid}
        ),
        'unknown-kid': local.mint(claims, key=generate_key('RS256', kid='never-published')),
    }[case]
    before = accounts_and_identities(stack)
    response = oidc(stack, token)
    assert response.status_code == 401, response.text
    assert response.json()['error']['code'] in {'invalid_id_token', 'id_token_expired'}
    assert accounts_and_identities(stack) == before


def test_an_unknown_provider_is_404(stack: Stack):
    response = stack.http.post('/v1/auth/oidc', json={'provider': 'nope', 'id_token': 'x.y.z'})
    assert response.status_code == 404 and response.json()['error']['code'] == 'unknown_provider'


def test_a_key_rotation_at_the_issuer_keeps_sign_in_working(stack: Stack):
    local = issuer(stack)
    subject = f'rotating-{uuid.uuid4().hex}'
    before = local.id_token(subject)
    assert oidc(stack, before).status_code == 200
    # When the issuer signs with a new key (the old one still published)
    local.rotate()
    try:
        after = local.id_token(subject)
        # Then tokens of both keys sign in (the verifier refetches the key set for the new kid; it refetches at
        # most every 30 s, so a key used at once may wait that long: real issuers publish keys before use)
        deadline = time.monotonic() + 45
        while (answer := oidc(stack, after)).status_code != 200 and time.monotonic() < deadline:
            time.sleep(3)
        assert answer.status_code == 200, answer.text
        assert oidc(stack, before).status_code == 200
    finally:
        local.reset()


def test_a_device_account_links_an_identity_and_keeps_its_credits(stack: Stack):
    # Given a device account with credits
    user = stack.sign_in()
    stack.adjust(user.account_id, 42)
    subject = f'linker-{uuid.uuid4().hex}'
    # When it links an identity
    linked = user.post('/v1/auth/link', json={'provider': 'local', 'id_token': issuer(stack).id_token(subject)})
    assert linked.status_code == 200, linked.text
    assert linked.json() == {'account_id': user.account_id, 'provider': 'local'}
    # And linking it again is fine
    again = user.post('/v1/auth/link', json={'provider': 'local', 'id_token': issuer(stack).id_token(subject)})
    assert again.status_code == 200
    # Then signing in with that identity on another device reaches the same account and balance
    elsewhere = oidc(stack, issuer(stack).id_token(subject))
    assert elsewhere.json()['account_id'] == user.account_id
    me = stack.http.get('/v1/me', headers={'authorization': f'Bearer {elsewhere.json()["access_token"]}'})
    assert me.json()['balance'] == {'available': 42, 'held': 0}


def test_an_identity_of_another_account_cannot_be_linked(stack: Stack):
    subject = f'taken-{uuid.uuid4().hex}'
    owner = oidc(stack, issuer(stack).id_token(subject)).json()['account_id']
    user = stack.sign_in()
    stack.adjust(user.account_id, 7)
    response = user.post('/v1/auth/link', json={'provider': 'local', 'id_token': issuer(stack).id_token(subject)})
    assert response.status_code == 409 and response.json()['error']['code'] == 'identity_already_linked'
    # and nothing moved: each account keeps its own balance
    assert user.get('/v1/me').json()['balance']['available'] == 7
    assert oidc(stack, issuer(stack).id_token(subject)).json()['account_id'] == owner


def test_linking_needs_a_signed_in_account(stack: Stack):
    token = issuer(stack).id_token(f'anon-{uuid.uuid4().hex}')
    response = stack.http.post('/v1/auth/link', json={'provider': 'local', 'id_token': token})
    assert response.status_code == 401
