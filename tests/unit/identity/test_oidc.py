"""OIDC ID token verification against the local issuer on 127.0.0.1 (discovery, JWKS, POST /token)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from atelier.errors import ErrorKind
from atelier.identity.oidc import (
    LEEWAY_SECONDS,
    IdentityProviderUnavailable,
    InvalidIdToken,
    InvalidProviderConfig,
    OidcVerifier,
    UnknownProvider,
    VerifiedIdentity,
    parse_providers,
)
from infra.local.oidc_issuer import LocalOidcIssuer, generate_key

CLIENT_ID = 'atelier-local'
REFETCH = 30.0
TTL = 3600.0


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope='module')
def running_issuer() -> Iterator[LocalOidcIssuer]:
    with LocalOidcIssuer() as running:
        yield running


@pytest.fixture
def issuer(running_issuer: LocalOidcIssuer, clock: Clock) -> LocalOidcIssuer:
    running_issuer.reset()
    running_issuer.clock = clock
    return running_issuer


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0) as client:
        yield client


def local_verifier(issuer: LocalOidcIssuer, clock: Clock, http: httpx.Client, **options: Any) -> OidcVerifier:
    setting = json.dumps([{'id': 'local', 'issuer': issuer.issuer, 'client_ids': [CLIENT_ID, 'other-app']}])
    providers = parse_providers(setting, allow_insecure_local=True)
    return OidcVerifier(providers, http=http, clock=clock, min_refetch_seconds=REFETCH, jwks_ttl_seconds=TTL, **options)


@pytest.fixture
def verifier(issuer: LocalOidcIssuer, clock: Clock, http: httpx.Client) -> OidcVerifier:
    return local_verifier(issuer, clock, http)


def fetches(issuer: LocalOidcIssuer, path: str = '/jwks') -> int:
    return sum(1 for request in issuer.requests if request['path'] == path)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode()


def refused(verifier: OidcVerifier, token: str, nonce: str | None = None) -> InvalidIdToken:
    with pytest.raises(InvalidIdToken) as caught:
        verifier.verify('local', token, nonce=nonce)
    assert caught.value.kind is ErrorKind.UNAUTHORIZED
    return caught.value


# ---------------------------------------------------------------- acceptance
def test_a_token_of_the_issuer_names_its_subject(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    # Given a token the issuer signed for our client
    token = issuer.id_token('user-1', email='ada@example.com')
    # When it is verified
    identity = verifier.verify('local', token)
    # Then it names the issuer's subject and the provider
    assert identity == VerifiedIdentity(
        issuer=issuer.issuer, subject='user-1', email='ada@example.com', email_verified=True, provider='local'
    )


def test_the_development_token_endpoint_mints_a_token_that_verifies(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    # Given a token from POST <issuer>/token, as a developer would get it with curl
    response = httpx.post(f'{issuer.issuer}/token', json={'sub': 'dev-1', 'nonce': 'n-1'})
    assert response.status_code == 200
    # Then it verifies for the default audience, with its nonce
    identity = verifier.verify('local', response.json()['id_token'], nonce='n-1')
    assert (identity.subject, identity.email, identity.email_verified) == ('dev-1', None, False)


def test_the_development_token_endpoint_refuses_a_request_without_subject(issuer: LocalOidcIssuer):
    assert httpx.post(f'{issuer.issuer}/token', json={'email': 'a@example.com'}).status_code == 400
    assert httpx.post(f'{issuer.issuer}/token', content=b'not json').status_code == 400


def test_the_discovery_document_names_the_issuer_and_its_keys(issuer: LocalOidcIssuer):
    document = httpx.get(f'{issuer.issuer}/.well-known/openid-configuration').json()
    keys = httpx.get(document['jwks_uri']).json()['keys']
    assert document['issuer'] == issuer.issuer
    assert document['id_token_signing_alg_values_supported'] == ['RS256']
    assert [(key['kid'], key['alg'], key['use'], 'd' in key) for key in keys] == [
        (issuer.signing_key.kid, 'RS256', 'sig', False)
    ]


def test_a_token_for_any_of_the_client_ids_is_accepted(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    assert verifier.verify('local', issuer.id_token('u', aud='other-app')).subject == 'u'
    assert verifier.verify('local', issuer.id_token('u', aud=['someone-else', CLIENT_ID])).subject == 'u'


def test_several_audiences_with_our_azp_are_accepted(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    token = issuer.id_token('u', aud=[CLIENT_ID, 'someone-else'], azp=CLIENT_ID)
    assert verifier.verify('local', token).subject == 'u'


def test_a_single_audience_is_not_held_to_its_azp(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    # Google: aud is the server client id, azp the Android client that asked
    assert verifier.verify('local', issuer.id_token('u', azp='android-client')).subject == 'u'


def test_an_ec_key_signs_with_es256(clock: Clock, http: httpx.Client):
    with LocalOidcIssuer(alg='ES256', clock=clock) as issuer:
        verifier = local_verifier(issuer, clock, http)
        assert verifier.verify('local', issuer.id_token('u')).subject == 'u'
        # and an RS256 token under the EC key's kid is refused before its signature is looked at
        token = issuer.mint(issuer.claims('u'), key=generate_key('RS256'), headers={'kid': issuer.signing_key.kid})
        assert 'algorithm' in refused(verifier, token).message


def test_an_ed25519_key_signs_with_ed25519(clock: Clock, http: httpx.Client):
    with LocalOidcIssuer(alg='Ed25519', clock=clock) as issuer:
        verifier = local_verifier(issuer, clock, http)
        assert verifier.verify('local', issuer.id_token('u')).subject == 'u'
        # the deprecated polymorphic name is not taken, though the signature is the same
        _, payload, signature = issuer.id_token('u').split('.')
        header = b64(json.dumps({'alg': 'EdDSA', 'kid': issuer.signing_key.kid}).encode())
        assert 'algorithm' in refused(verifier, f'{header}.{payload}.{signature}').message


def test_a_key_without_alg_takes_the_algorithm_of_its_type(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    # Given an issuer whose only key is published without "alg" (RSA: RS256)
    issuer.rotate(drop_old=True, publish_alg=False)
    assert 'alg' not in issuer.jwks()['keys'][0]
    # Then RS256 verifies, and PS256 with the same key (a valid signature) is refused
    assert verifier.verify('local', issuer.id_token('u')).subject == 'u'
    assert 'algorithm' in refused(verifier, issuer.mint(issuer.claims('u'), alg='PS256')).message


def test_email_verified_may_be_the_string_true(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    # Apple sends "true"/"false" strings
    token = issuer.mint(issuer.claims('u', email='a@privaterelay.appleid.com', email_verified='true'))
    assert verifier.verify('local', token).email_verified is True
    token = issuer.mint(issuer.claims('u', email='a@example.com', email_verified='false'))
    assert verifier.verify('local', token).email_verified is False


def test_a_token_without_kid_is_accepted_only_from_an_issuer_with_one_key(
    issuer: LocalOidcIssuer, verifier: OidcVerifier, clock: Clock
):
    token = issuer.mint(issuer.claims('u'), headers={'kid': None})
    assert verifier.verify('local', token).subject == 'u'
    issuer.rotate()
    clock.advance(TTL)
    assert 'does not publish' in refused(verifier, issuer.mint(issuer.claims('u'), headers={'kid': None})).message


# ---------------------------------------------------------------- nonce
def test_a_matching_nonce_is_accepted_and_another_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    token = issuer.id_token('u', nonce='raw-nonce')
    assert verifier.verify('local', token, nonce='raw-nonce').subject == 'u'
    assert 'nonce' in refused(verifier, token, nonce='other-nonce').message


def test_the_nonce_is_compared_exactly_never_hashed(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    # Given an Apple-style token that carries the SHA-256 hex of the app's raw nonce
    hashed = hashlib.sha256(b'raw-nonce').hexdigest()
    token = issuer.id_token('u', nonce=hashed)
    # Then the client sends what it gave Apple (the hash); the raw nonce does not match
    assert verifier.verify('local', token, nonce=hashed).subject == 'u'
    refused(verifier, token, nonce='raw-nonce')


def test_a_nonce_sent_for_a_token_without_one_is_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    refused(verifier, issuer.id_token('u'), nonce='n')
    refused(verifier, issuer.id_token('u', nonce='\u00e9'), nonce='e')  # non-ASCII: refused, not a crash


def test_a_token_nonce_is_not_required_when_the_caller_sends_none(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    assert verifier.verify('local', issuer.id_token('u', nonce='n')).subject == 'u'


# ---------------------------------------------------------------- refusals
def test_a_forged_signature_is_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    # Given a good token whose payload is swapped for another subject's
    head, _, signature = issuer.id_token('user-1').split('.')
    forged = b64(json.dumps(issuer.claims('admin')).encode())
    assert 'signature' in refused(verifier, f'{head}.{forged}.{signature}').message


def test_a_token_signed_with_another_key_under_a_published_kid_is_refused(
    issuer: LocalOidcIssuer, verifier: OidcVerifier
):
    token = issuer.mint(issuer.claims('u'), key=generate_key('RS256'), headers={'kid': issuer.signing_key.kid})
    assert 'signature' in refused(verifier, token).message


def test_an_expired_token_is_refused_past_the_leeway(issuer: LocalOidcIssuer, verifier: OidcVerifier, clock: Clock):
    token = issuer.id_token('u', expires_in=60)
    clock.advance(60 + LEEWAY_SECONDS - 1)
    assert verifier.verify('local', token).subject == 'u'  # within the leeway
    clock.advance(1)
    assert refused(verifier, token).code == 'id_token_expired'


@pytest.mark.parametrize(
    ('claims', 'reason'),
    [
        ({'aud': 'someone-else'}, 'another client'),
        ({'aud': ['someone-else', 'another']}, 'another client'),
        ({'aud': [CLIENT_ID, 'someone-else'], 'azp': 'someone-else'}, 'azp'),
        ({'aud': 7}, 'audience'),
        ({'iss': 'https://accounts.google.com'}, 'not issued by local'),
        ({'iss': None}, 'not issued by local'),
        ({'sub': ''}, 'subject'),
        ({'sub': 42}, 'subject'),
        ({'exp': None}, 'lifetime'),
        ({'exp': '9999999999'}, 'lifetime'),
        ({'iat': None}, 'lifetime'),
        ({'iat': True}, 'lifetime'),
    ],
)
def test_a_token_with_wrong_claims_is_refused(
    issuer: LocalOidcIssuer, verifier: OidcVerifier, claims: dict[str, Any], reason: str
):
    token_claims = {key: value for key, value in {**issuer.claims('u'), **claims}.items() if value is not None}
    assert reason in refused(verifier, issuer.mint(token_claims)).message


def test_a_token_from_the_future_is_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier, clock: Clock):
    now = int(clock())
    future_iat = issuer.claims('u', iat=now + LEEWAY_SECONDS + 5, exp=now + 3600)
    assert 'future' in refused(verifier, issuer.mint(future_iat)).message
    future_nbf = issuer.claims('u', nbf=now + LEEWAY_SECONDS + 5)
    assert 'not valid yet' in refused(verifier, issuer.mint(future_nbf)).message
    assert verifier.verify('local', issuer.mint(issuer.claims('u', nbf=now + LEEWAY_SECONDS - 5))).subject == 'u'


def test_alg_none_is_refused_with_or_without_a_signature(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    unsigned = issuer.mint(issuer.claims('u'), alg='none')
    assert unsigned.endswith('.')
    for token in (unsigned, unsigned + 'c2lnbmF0dXJl'):
        assert 'algorithm' in refused(verifier, token).message


@pytest.mark.parametrize('alg', ['HS256', 'HS384', 'HS512'])
def test_hmac_keyed_with_the_public_key_is_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier, alg: str):
    # The classic key confusion: HS256 whose secret is the provider's public key PEM, under its real kid
    token = issuer.mint(issuer.claims('u'), key=issuer.public_pem(), alg=alg, headers={'kid': issuer.signing_key.kid})
    assert 'algorithm' in refused(verifier, token).message


def test_a_header_algorithm_other_than_the_key_is_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    # RS384 with the RS256 key is a valid signature, but not the algorithm the key is published for
    assert 'algorithm' in refused(verifier, issuer.mint(issuer.claims('u'), alg='RS384')).message


def test_an_unknown_kid_is_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    assert 'does not publish' in refused(verifier, issuer.mint(issuer.claims('u'), headers={'kid': 'nope'})).message


def test_a_symmetric_key_in_the_jwks_is_never_used(
    issuer: LocalOidcIssuer, verifier: OidcVerifier, monkeypatch: pytest.MonkeyPatch
):
    # Given a JWKS that (wrongly) also publishes an HMAC key
    secret = b'shared-secret-of-at-least-32-bytes!!'
    oct_jwk = {'kty': 'oct', 'kid': 'hmac', 'alg': 'HS256', 'k': b64(secret)}
    published = issuer.jwks()['keys']
    monkeypatch.setattr(issuer, 'jwks', lambda: {'keys': [*published, oct_jwk]})
    # Then a token signed with it is refused whatever it claims
    refused(verifier, issuer.mint(issuer.claims('u'), key=secret, alg='HS256', headers={'kid': 'hmac'}))
    refused(verifier, issuer.mint(issuer.claims('u'), headers={'kid': 'hmac'}))


@pytest.mark.parametrize(
    'token',
    ['', 'a.b', 'a.b.c.d', '!!!.###.$$$', 'e30.e30.sig', '\u00e9.\u00e9.\u00e9', 'x' * 200_000],
)
def test_a_malformed_token_is_refused_not_a_crash(verifier: OidcVerifier, token: str):
    refused(verifier, token)


@pytest.mark.parametrize('extra', [{'crit': ['exp'], 'exp': 1}, {'b64': False, 'crit': ['b64']}, {'kid': 7}])
def test_headers_an_id_token_never_has_are_refused(
    issuer: LocalOidcIssuer, verifier: OidcVerifier, extra: dict[str, Any]
):
    _, payload, signature = issuer.id_token('u').split('.')
    header = {'alg': 'RS256', 'kid': issuer.signing_key.kid, **extra}
    assert 'header' in refused(verifier, f'{b64(json.dumps(header).encode())}.{payload}.{signature}').message


def test_a_token_that_is_not_a_json_object_is_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    assert 'malformed' in refused(verifier, issuer.mint([1, 2, 3])).message  # type: ignore[arg-type]


def test_an_unknown_provider_is_not_found(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    with pytest.raises(UnknownProvider) as caught:
        verifier.verify('apple', issuer.id_token('u'))
    assert (caught.value.kind, caught.value.code) == (ErrorKind.NOT_FOUND, 'unknown_provider')
    assert issuer.requests == []


# ---------------------------------------------------------------- caching, rotation, rate limit
def test_the_key_set_is_fetched_once_for_many_verifications(
    issuer: LocalOidcIssuer, verifier: OidcVerifier, clock: Clock
):
    for n in range(20):
        verifier.verify('local', issuer.id_token(f'user-{n}'))
        clock.advance(60)
    assert (fetches(issuer, '/.well-known/openid-configuration'), fetches(issuer)) == (1, 1)


def test_the_key_set_is_fetched_again_after_its_ttl(issuer: LocalOidcIssuer, verifier: OidcVerifier, clock: Clock):
    verifier.verify('local', issuer.id_token('u'))
    clock.advance(TTL)
    verifier.verify('local', issuer.id_token('u'))
    assert (fetches(issuer, '/.well-known/openid-configuration'), fetches(issuer)) == (2, 2)


def test_keys_rotate_without_downtime(issuer: LocalOidcIssuer, verifier: OidcVerifier, clock: Clock):
    # Given a verifier that has cached the first key, and a token signed with it
    old_token = issuer.id_token('u', expires_in=24 * 3600)
    verifier.verify('local', old_token)
    clock.advance(REFETCH)
    # When the issuer rotates, keeping the old key published for an overlap
    issuer.rotate()
    new_token = issuer.id_token('u')
    # Then the new key's unknown kid fetches the key set once, and both tokens verify
    assert verifier.verify('local', new_token).subject == 'u'
    assert verifier.verify('local', old_token).subject == 'u'
    assert fetches(issuer) == 2
    # When the old key is dropped and the cached key set refreshes
    issuer.rotate(drop_old=True)
    clock.advance(TTL)
    # Then tokens of the old keys are refused, and the current key's verify
    assert 'does not publish' in refused(verifier, old_token).message
    assert 'does not publish' in refused(verifier, new_token).message
    assert verifier.verify('local', issuer.id_token('u')).subject == 'u'


def test_unknown_kids_refetch_the_key_set_at_most_once_per_window(
    issuer: LocalOidcIssuer, verifier: OidcVerifier, clock: Clock
):
    # Given a warm cache
    verifier.verify('local', issuer.id_token('u'))
    clock.advance(REFETCH)
    # When a flood of tokens names random kids
    for n in range(50):
        refused(verifier, issuer.mint(issuer.claims('u'), headers={'kid': f'random-{n}'}))
        clock.advance(0.1)
    # Then the issuer was asked once more in that window, and once more after it
    assert fetches(issuer) == 2
    clock.advance(REFETCH)
    refused(verifier, issuer.mint(issuer.claims('u'), headers={'kid': 'random-late'}))
    assert fetches(issuer) == 3
    assert fetches(issuer, '/.well-known/openid-configuration') == 1  # an unknown kid does not rediscover


def test_a_key_published_right_after_a_fetch_waits_for_the_window(
    issuer: LocalOidcIssuer, verifier: OidcVerifier, clock: Clock
):
    verifier.verify('local', issuer.id_token('u'))
    issuer.rotate()
    token = issuer.id_token('u')
    refused(verifier, token)
    clock.advance(REFETCH)
    assert verifier.verify('local', token).subject == 'u'


# ---------------------------------------------------------------- the issuer misbehaves
def test_a_discovery_document_naming_another_issuer_is_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    issuer.discovery_overrides['issuer'] = 'https://evil.example.com'
    with pytest.raises(IdentityProviderUnavailable) as caught:
        verifier.verify('local', issuer.id_token('u'))
    assert (caught.value.kind, caught.value.code) == (ErrorKind.UNAVAILABLE, 'identity_provider_misconfigured')
    assert fetches(issuer) == 0


def test_a_jwks_uri_elsewhere_over_http_is_refused(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    issuer.discovery_overrides['jwks_uri'] = 'http://keys.example.com/jwks'
    with pytest.raises(IdentityProviderUnavailable) as caught:
        verifier.verify('local', issuer.id_token('u'))
    assert caught.value.code == 'identity_provider_misconfigured'


def test_an_issuer_that_is_down_is_unavailable_and_not_hammered(
    issuer: LocalOidcIssuer, verifier: OidcVerifier, clock: Clock
):
    # Given an issuer that answers 503
    issuer.fail(status=503, times=None)
    token = issuer.id_token('u')
    # Then verification is a retryable failure, not a refusal of the caller
    with pytest.raises(IdentityProviderUnavailable) as caught:
        verifier.verify('local', token)
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    # and retries within the window do not reach the issuer
    for _ in range(10):
        with pytest.raises(IdentityProviderUnavailable):
            verifier.verify('local', token)
    assert len(issuer.requests) == 1
    # When it recovers, the next attempt after the window succeeds
    issuer.recover()
    clock.advance(REFETCH)
    assert verifier.verify('local', token).subject == 'u'


def test_an_issuer_that_cannot_be_reached_is_unavailable(clock: Clock, http: httpx.Client):
    issuer = LocalOidcIssuer(clock=clock)
    issuer.start()
    verifier = local_verifier(issuer, clock, http)
    token = issuer.id_token('u')
    issuer.stop()
    with pytest.raises(IdentityProviderUnavailable):
        verifier.verify('local', token)


@pytest.mark.parametrize('document', [{'keys': 'none'}, {'no_keys': []}])
def test_a_key_set_that_is_not_a_jwks_is_unavailable(
    issuer: LocalOidcIssuer, verifier: OidcVerifier, document: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(issuer, 'jwks', lambda: document)
    with pytest.raises(IdentityProviderUnavailable, match='not a JWKS'):
        verifier.verify('local', issuer.id_token('u'))


def test_a_jwks_uri_that_answers_404_is_unavailable(issuer: LocalOidcIssuer, verifier: OidcVerifier):
    issuer.discovery_overrides['jwks_uri'] = f'{issuer.issuer}/no-such-keys'
    with pytest.raises(IdentityProviderUnavailable, match='404'):
        verifier.verify('local', issuer.id_token('u'))


# ---------------------------------------------------------------- https providers (Google, Firebase)
def https_verifier(issuer: LocalOidcIssuer, clock: Clock, provider: dict[str, Any]) -> OidcVerifier:
    """A verifier for an https provider whose discovery and JWKS answer with the local issuer's keys."""

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith('/.well-known/openid-configuration'):
            return httpx.Response(200, json={'issuer': provider['issuer'], 'jwks_uri': 'https://keys.example.com/jwks'})
        if str(request.url) == 'https://keys.example.com/jwks':
            return httpx.Response(200, json=issuer.jwks())
        return httpx.Response(404)

    http = httpx.Client(transport=httpx.MockTransport(serve))
    return OidcVerifier(parse_providers(json.dumps([provider])), http=http, clock=clock)


def test_google_tokens_may_carry_the_issuer_without_scheme(issuer: LocalOidcIssuer, clock: Clock):
    google = {'id': 'google', 'issuer': 'https://accounts.google.com', 'client_ids': ['web.apps.googleusercontent']}
    verifier = https_verifier(issuer, clock, google)
    for iss in ('https://accounts.google.com', 'accounts.google.com'):
        token = issuer.mint(issuer.claims('g-1', aud='web.apps.googleusercontent', iss=iss))
        assert verifier.verify('google', token) == VerifiedIdentity(
            issuer='https://accounts.google.com', subject='g-1', email=None, email_verified=False, provider='google'
        )


def test_firebase_tokens_need_an_auth_time(issuer: LocalOidcIssuer, clock: Clock):
    firebase_issuer = 'https://securetoken.google.com/my-project'
    firebase = {'id': 'firebase', 'issuer': firebase_issuer, 'client_ids': ['my-project']}
    verifier = https_verifier(issuer, clock, firebase)
    claims = issuer.claims('firebase-uid', aud='my-project', iss=firebase_issuer)
    assert verifier.verify('firebase', issuer.mint({**claims, 'auth_time': int(clock())})).subject == 'firebase-uid'
    with pytest.raises(InvalidIdToken, match='auth_time'):
        verifier.verify('firebase', issuer.mint(claims))


# ---------------------------------------------------------------- the providers setting
def test_the_providers_setting_parses_to_providers():
    setting = json.dumps(
        [
            {'id': 'apple', 'issuer': 'https://appleid.apple.com', 'client_ids': ['com.example.app']},
            {'id': 'auth0', 'issuer': 'https://tenant.eu.auth0.com/', 'client_ids': ['abc', 'def']},
        ]
    )
    providers = parse_providers(setting)
    assert [(p.id, p.issuer, p.client_ids) for p in providers] == [
        ('apple', 'https://appleid.apple.com', ('com.example.app',)),
        ('auth0', 'https://tenant.eu.auth0.com/', ('abc', 'def')),
    ]
    assert providers[0].model_dump() == {
        'id': 'apple',
        'issuer': 'https://appleid.apple.com',
        'client_ids': ('com.example.app',),
    }
    assert OidcVerifier(providers).providers == providers


@pytest.mark.parametrize('setting', ['', '   ', '[]'])
def test_an_empty_providers_setting_enables_none(setting: str):
    assert parse_providers(setting) == ()


@pytest.mark.parametrize(
    ('providers', 'problem'),
    [
        ([{'id': 'a', 'issuer': 'https://a.example.com', 'client_ids': ['x']}] * 2, 'duplicate id'),
        (
            [
                {'id': 'a', 'issuer': 'https://a.example.com', 'client_ids': ['x']},
                {'id': 'b', 'issuer': 'https://a.example.com', 'client_ids': ['y']},
            ],
            'duplicate issuer',
        ),
        ([{'id': 'a', 'issuer': 'http://a.example.com', 'client_ids': ['x']}], 'https'),
        ([{'id': 'a', 'issuer': 'http://127.0.0.1:9000', 'client_ids': ['x']}], 'allow_insecure_local'),
        ([{'id': 'a', 'issuer': 'https://a.example.com?x=1', 'client_ids': ['x']}], 'query'),
        ([{'id': 'a', 'issuer': 'https://', 'client_ids': ['x']}], 'host'),
        ([{'id': 'a', 'issuer': 'https://a.example.com', 'client_ids': []}], 'client_ids'),
        ([{'id': 'a', 'issuer': 'https://a.example.com', 'client_ids': ['x', 'x']}], 'unique'),
        ([{'id': 'a', 'issuer': 'https://a.example.com', 'client_ids': ['']}], 'client_ids'),
        ([{'id': 'a', 'issuer': 'https://a.example.com', 'client_ids': 'x'}], 'client_ids'),
        ([{'id': 'A b', 'issuer': 'https://a.example.com', 'client_ids': ['x']}], 'id'),
        ([{'id': 'a', 'issuer': 'https://a.example.com', 'client_ids': ['x'], 'secret': 's'}], 'secret'),
        ([{'id': 'a', 'issuer': 'https://a.example.com'}], 'client_ids'),
        ({'id': 'a'}, 'array'),
    ],
)
def test_a_bad_providers_setting_is_refused(providers: Any, problem: str):
    with pytest.raises(InvalidProviderConfig, match=problem):
        parse_providers(json.dumps(providers))


def test_a_providers_setting_that_is_not_json_is_refused():
    with pytest.raises(InvalidProviderConfig):
        parse_providers('apple=https://appleid.apple.com')


def test_a_local_http_issuer_needs_the_explicit_flag():
    setting = json.dumps([{'id': 'local', 'issuer': 'http://127.0.0.1:9000', 'client_ids': ['atelier-local']}])
    assert parse_providers(setting, allow_insecure_local=True)[0].issuer == 'http://127.0.0.1:9000'
    remote = json.dumps([{'id': 'x', 'issuer': 'http://a.example.com', 'client_ids': ['y']}])
    with pytest.raises(InvalidProviderConfig):
        parse_providers(remote, allow_insecure_local=True)


# ---------------------------------------------------------------- cold start
def test_importing_the_module_loads_neither_the_jose_library_nor_httpx():
    code = (
        'import sys, atelier.identity.oidc as m; '
        'print(sorted(n for n in ("joserfc", "httpx", "cryptography") if n in sys.modules))'
    )
    layer = Path(__file__).resolve().parents[3] / 'layers' / 'core'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=layer)
    assert out.stdout.strip() == '[]'
