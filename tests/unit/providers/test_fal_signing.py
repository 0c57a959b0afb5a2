"""fal webhook signatures: ED25519 over request id, user id, timestamp and the body's SHA-256, keys from a JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from atelier.providers import InvalidWebhookSignature, ProviderUnavailable
from atelier.providers.fal.signing import FalWebhookVerifier, message

JWKS_URL = 'https://fal.example/.well-known/jwks.json'
BODY = json.dumps({'request_id': 'req-1', 'status': 'OK', 'payload': {'images': []}}).encode()
NOW = 1_800_000_000


@dataclass
class Jwks:
    """fal's JWKS endpoint: the keys it publishes, and how often it was asked."""

    keys: list[tuple[str, Ed25519PrivateKey]] = field(default_factory=list)
    fetches: int = 0
    status: int = 200

    def publish(self) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        self.keys.append((f'kid-{len(self.keys)}', key))
        return key

    def handler(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == JWKS_URL
        self.fetches += 1
        if self.status != 200:
            return httpx.Response(self.status)
        raw = [(kid, k.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)) for kid, k in self.keys]
        keys = [
            {'kty': 'OKP', 'crv': 'Ed25519', 'kid': kid, 'x': base64.urlsafe_b64encode(x).decode().rstrip('=')}
            for kid, x in raw
        ]
        return httpx.Response(200, json={'keys': [{'kty': 'RSA', 'n': 'ignored', 'e': 'AQAB'}, *keys]})


@dataclass
class Clock:
    now: float = NOW

    def __call__(self) -> float:
        return self.now


def signed(
    key: Ed25519PrivateKey, body: bytes = BODY, *, timestamp: int = NOW, request_id: str = 'req-1'
) -> dict[str, str]:
    ts = str(timestamp)
    return {
        'X-Fal-Webhook-Request-Id': request_id,
        'X-Fal-Webhook-User-Id': 'user-1',
        'X-Fal-Webhook-Timestamp': ts,
        'X-Fal-Webhook-Signature': key.sign(message(request_id, 'user-1', ts, body)).hex(),
    }


@pytest.fixture
def jwks() -> Jwks:
    return Jwks()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(jwks: Jwks, clock: Clock) -> FalWebhookVerifier:
    return FalWebhookVerifier(JWKS_URL, http=httpx.Client(transport=httpx.MockTransport(jwks.handler)), clock=clock)


def test_the_signed_message_is_request_user_timestamp_and_the_body_hash() -> None:
    expected = f'req-1\nuser-1\n{NOW}\n{hashlib.sha256(BODY).hexdigest()}'.encode()
    assert message('req-1', 'user-1', str(NOW), BODY) == expected


def test_a_webhook_signed_by_a_published_key_is_accepted(jwks: Jwks, verifier: FalWebhookVerifier) -> None:
    key = jwks.publish()
    result = verifier.verify(signed(key), BODY)
    assert (result.request_id, result.user_id, result.timestamp) == ('req-1', 'user-1', NOW)
    # header names are case-insensitive, as HTTP's are
    assert verifier.verify({k.lower(): v for k, v in signed(key).items()}, BODY).request_id == 'req-1'


def test_forged_tampered_and_unsigned_webhooks_are_refused(jwks: Jwks, verifier: FalWebhookVerifier) -> None:
    key = jwks.publish()
    forger = Ed25519PrivateKey.generate()
    with pytest.raises(InvalidWebhookSignature):
        verifier.verify(signed(forger), BODY)
    with pytest.raises(InvalidWebhookSignature):
        verifier.verify(signed(key), BODY.replace(b'OK', b'ERROR'))  # the body is not what was signed
    with pytest.raises(InvalidWebhookSignature):
        verifier.verify(signed(key, request_id='req-1') | {'X-Fal-Webhook-Request-Id': 'req-2'}, BODY)
    headers = signed(key)
    for missing in headers:
        with pytest.raises(InvalidWebhookSignature):
            verifier.verify({k: v for k, v in headers.items() if k != missing}, BODY)
    with pytest.raises(InvalidWebhookSignature):
        verifier.verify(headers | {'X-Fal-Webhook-Signature': 'not hex'}, BODY)


def test_a_shared_secret_hmac_is_not_a_fal_signature(jwks: Jwks, verifier: FalWebhookVerifier) -> None:
    jwks.publish()
    headers = signed(jwks.keys[0][1])
    mac = hmac.new(b'fal-webhook-secret', message('req-1', 'user-1', str(NOW), BODY), hashlib.sha256).hexdigest()
    with pytest.raises(InvalidWebhookSignature):
        verifier.verify(headers | {'X-Fal-Webhook-Signature': mac}, BODY)


@pytest.mark.parametrize('offset', [-301, 301, -3600])
def test_a_timestamp_more_than_five_minutes_away_is_refused(
    jwks: Jwks, verifier: FalWebhookVerifier, offset: int
) -> None:
    key = jwks.publish()
    with pytest.raises(InvalidWebhookSignature, match='timestamp'):
        verifier.verify(signed(key, timestamp=NOW + offset), BODY)
    assert verifier.verify(signed(key, timestamp=NOW - 299), BODY).request_id == 'req-1'


def test_the_jwks_is_cached_up_to_24_hours(jwks: Jwks, verifier: FalWebhookVerifier, clock: Clock) -> None:
    key = jwks.publish()
    for _ in range(5):
        verifier.verify(signed(key, timestamp=int(clock.now)), BODY)
    assert jwks.fetches == 1
    clock.now += 24 * 3600 - 1
    verifier.verify(signed(key, timestamp=int(clock.now)), BODY)
    assert jwks.fetches == 1
    clock.now += 2
    verifier.verify(signed(key, timestamp=int(clock.now)), BODY)
    assert jwks.fetches == 2


def test_a_new_key_is_fetched_once_and_forgeries_do_not_refetch_each_time(
    jwks: Jwks, verifier: FalWebhookVerifier, clock: Clock
) -> None:
    # Given a cached key set
    old = jwks.publish()
    verifier.verify(signed(old), BODY)
    clock.now += 60
    # When fal rotates (a new kid) and signs with the new key
    new = jwks.publish()
    # Then the webhook is accepted after one refetch of the set
    assert verifier.verify(signed(new, timestamp=int(clock.now)), BODY).request_id == 'req-1'
    assert jwks.fetches == 2
    # And forged webhooks right after cost no fetch (at most one per min_refetch_seconds)
    forger = Ed25519PrivateKey.generate()
    for _ in range(3):
        with pytest.raises(InvalidWebhookSignature):
            verifier.verify(signed(forger, timestamp=int(clock.now)), BODY)
    assert jwks.fetches == 2
    # And the old key still verifies while fal publishes it
    assert verifier.verify(signed(old, timestamp=int(clock.now)), BODY).request_id == 'req-1'
    assert jwks.fetches == 2


def test_a_forgery_refetches_at_most_once_and_then_is_refused(
    jwks: Jwks, verifier: FalWebhookVerifier, clock: Clock
) -> None:
    jwks.publish()
    verifier.verify(signed(jwks.keys[0][1]), BODY)
    clock.now += 30
    with pytest.raises(InvalidWebhookSignature):
        verifier.verify(signed(Ed25519PrivateKey.generate(), timestamp=int(clock.now)), BODY)
    assert jwks.fetches == 2


def test_an_unreachable_jwks_is_unavailable_not_a_forgery_and_backs_off(
    jwks: Jwks, verifier: FalWebhookVerifier, clock: Clock
) -> None:
    key = jwks.publish()
    jwks.status = 503
    with pytest.raises(ProviderUnavailable):
        verifier.verify(signed(key), BODY)
    # Right after a failed fetch, webhooks fail fast: no other fetch for 10 s
    clock.now += 5
    with pytest.raises(ProviderUnavailable):
        verifier.verify(signed(key, timestamp=int(clock.now)), BODY)
    assert jwks.fetches == 1
    # Then it is fetched again
    jwks.status = 200
    clock.now += 6
    assert verifier.verify(signed(key, timestamp=int(clock.now)), BODY).request_id == 'req-1'
    assert jwks.fetches == 2


def test_keys_past_24_hours_are_never_used_when_the_jwks_cannot_be_fetched(
    jwks: Jwks, verifier: FalWebhookVerifier, clock: Clock
) -> None:
    # Given keys fetched a day ago
    key = jwks.publish()
    verifier.verify(signed(key), BODY)
    # When the JWKS is down as they expire, Then no webhook is verified with them (503: fal retries)
    jwks.status = 503
    clock.now += 24 * 3600 + 1
    for _ in range(3):
        with pytest.raises(ProviderUnavailable):
            verifier.verify(signed(key, timestamp=int(clock.now)), BODY)
        clock.now += 6
    assert jwks.fetches == 3  # the first; a failed one; the next only after the 10 s backoff
    # And once it answers again, its keys verify
    jwks.status = 200
    clock.now += 10
    assert verifier.verify(signed(key, timestamp=int(clock.now)), BODY).request_id == 'req-1'


def test_a_configured_fal_user_is_the_only_one_accepted(jwks: Jwks, clock: Clock) -> None:
    key = jwks.publish()
    http = httpx.Client(transport=httpx.MockTransport(jwks.handler))
    pinned = FalWebhookVerifier(JWKS_URL, user_id='user-1', http=http, clock=clock)
    assert pinned.verify(signed(key), BODY).user_id == 'user-1'
    # A webhook fal signed for another fal account (same keys) is not ours
    other = 'user-2'
    headers = signed(key) | {
        'X-Fal-Webhook-User-Id': other,
        'X-Fal-Webhook-Signature': key.sign(message('req-1', other, str(NOW), BODY)).hex(),
    }
    with pytest.raises(InvalidWebhookSignature, match='another fal account'):
        pinned.verify(headers, BODY)
    # Without a configured user (FalUserId empty), any fal user's signature verifies
    assert FalWebhookVerifier(JWKS_URL, http=http, clock=clock).verify(headers, BODY).user_id == other


@pytest.mark.parametrize(
    ('url', 'allowed'),
    [
        ('https://rest.alpha.fal.ai/.well-known/jwks.json', True),
        ('http://127.0.0.1:8123/.well-known/jwks.json', True),
        ('http://localhost:8123/.well-known/jwks.json', True),
        ('http://rest.alpha.fal.ai/.well-known/jwks.json', False),
        ('http://10.0.0.5/jwks.json', False),
        ('ftp://fal.example/jwks.json', False),
    ],
)
def test_the_jwks_url_is_https_except_on_this_machine(url: str, allowed: bool) -> None:
    if allowed:
        assert FalWebhookVerifier(url).jwks_url == url
    else:
        with pytest.raises(ValueError, match='https'):
            FalWebhookVerifier(url)


def test_a_fal_webhooks_worst_case_fits_its_function_timeout() -> None:
    from atelier.providers.fal import client, signing
    from infra.local.template import load_template

    function = load_template()['Resources']['ProviderWebhookFunction']['Properties']
    # One JWKS fetch and one result fetch at their timeouts, with room for SSM and DynamoDB; under the HTTP API's 30 s
    worst = (
        signing.FETCH_CONNECT_SECONDS
        + signing.FETCH_TIMEOUT_SECONDS
        + client.WEBHOOK_FETCH_CONNECT_SECONDS
        + client.WEBHOOK_FETCH_READ_SECONDS
    )
    assert worst + 5 <= function['Timeout'] < 30
