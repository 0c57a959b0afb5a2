"""Replicate's webhook signatures (Standard Webhooks, ``whsec_`` secrets), and the adapter's parse_webhook."""

from __future__ import annotations

import json
import time

import pytest

from atelier.catalog import load_catalog
from atelier.providers import InvalidWebhookSignature, Status, signing
from atelier.providers.base import MalformedWebhook
from atelier.providers.journal import InMemoryJournal
from atelier.providers.replicate.client import ReplicateProvider

SECRET = 'whsec_cmVwbGljYXRlX2F0ZWxpZXJfdGVzdA=='
BODY = json.dumps({'id': 'p1', 'status': 'succeeded', 'output': ['https://replicate.delivery/p1/out-0.png']}).encode()


def test_the_standard_webhooks_reference_vector() -> None:
    # The test vector published with the Standard Webhooks specification: the key is the base64 after whsec_.
    headers = {
        'webhook-id': 'msg_p5jXN8AQM9LWM0D4loKWxJek',
        'webhook-timestamp': '1614265330',
        'webhook-signature': 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
    }
    secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'
    body = b'{"test": 2432232314}'
    assert signing.verify(secret, headers, body, now=1614265330) == 'msg_p5jXN8AQM9LWM0D4loKWxJek'


def test_a_valid_signature_gives_the_message_id() -> None:
    headers = signing.sign(SECRET, BODY, message_id='msg_1')
    assert signing.verify(SECRET, headers, BODY) == 'msg_1'
    # Header names are case-insensitive (API Gateway lower-cases them, others may not)
    assert signing.verify(SECRET, {k.upper(): v for k, v in headers.items()}, BODY) == 'msg_1'


def test_a_tampered_body_id_or_timestamp_is_refused() -> None:
    headers = signing.sign(SECRET, BODY, message_id='msg_1')
    with pytest.raises(InvalidWebhookSignature):
        signing.verify(SECRET, headers, BODY.replace(b'succeeded', b'failed'))
    with pytest.raises(InvalidWebhookSignature):
        signing.verify(SECRET, {**headers, 'webhook-id': 'msg_2'}, BODY)
    with pytest.raises(InvalidWebhookSignature):
        signing.verify(SECRET, {**headers, 'webhook-timestamp': str(int(headers['webhook-timestamp']) + 1)}, BODY)


@pytest.mark.parametrize('offset', [-301, 301, -3600])
def test_a_stale_or_future_timestamp_is_refused(offset: int) -> None:
    now = 1_800_000_000
    headers = signing.sign(SECRET, BODY, timestamp=now + offset)
    with pytest.raises(InvalidWebhookSignature, match='timestamp'):
        signing.verify(SECRET, headers, BODY, now=now)


def test_a_timestamp_within_five_minutes_is_accepted() -> None:
    now = 1_800_000_000
    for offset in (-300, 0, 300):
        headers = signing.sign(SECRET, BODY, timestamp=now + offset)
        assert signing.verify(SECRET, headers, BODY, now=now)


def test_any_one_of_several_signatures_may_match() -> None:
    # While a secret is rotated Replicate signs with both: "v1,<old> v1,<new>"; other versions are ignored.
    good = signing.sign(SECRET, BODY, message_id='msg_1', timestamp=int(time.time()))
    other = signing.sign('whsec_b3RoZXJzZWNyZXQ=', BODY, message_id='msg_1', timestamp=int(good['webhook-timestamp']))
    value = good['webhook-signature'].split(',', 1)[1]
    for signatures in (
        f'{other["webhook-signature"]} {good["webhook-signature"]}',
        f'{good["webhook-signature"]} {other["webhook-signature"]}',
        f'v2,{value} {good["webhook-signature"]}',
    ):
        assert signing.verify(SECRET, {**good, 'webhook-signature': signatures}, BODY) == 'msg_1'
    with pytest.raises(InvalidWebhookSignature):
        signing.verify(SECRET, {**good, 'webhook-signature': f'v2,{value} {other["webhook-signature"]}'}, BODY)


def test_a_signature_by_another_secret_is_refused() -> None:
    headers = signing.sign('whsec_b3RoZXJzZWNyZXQ=', BODY)
    with pytest.raises(InvalidWebhookSignature, match='not valid'):
        signing.verify(SECRET, headers, BODY)
    # The key is the decoded secret: the secret's text used as a key does not verify either
    raw = signing.sign(SECRET.removeprefix('whsec_'), BODY)
    with pytest.raises(InvalidWebhookSignature):
        signing.verify(SECRET, raw, BODY)


@pytest.mark.parametrize(
    'headers',
    [
        {},
        {'webhook-id': 'msg_1', 'webhook-timestamp': '1'},
        {'webhook-id': 'msg_1', 'webhook-timestamp': 'yesterday', 'webhook-signature': 'v1,abc'},
    ],
)
def test_missing_or_malformed_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidWebhookSignature):
        signing.verify(SECRET, headers, BODY)


def test_a_secret_that_is_not_whsec_base64_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match='whsec_'):
        signing.secret_key('whsec_not*base64')
    assert signing.secret_key('plain') == b'plain'


def provider(secret: str = SECRET) -> ReplicateProvider:
    return ReplicateProvider(
        'http://127.0.0.1:9', api_token='r8_x', webhook_secret=secret, catalog=load_catalog(), journal=InMemoryJournal()
    )


def test_parse_webhook_verifies_then_normalizes() -> None:
    state = provider().parse_webhook(signing.sign(SECRET, BODY), BODY)
    assert state.status is Status.SUCCEEDED
    assert [(o.url, o.content_type) for o in state.outputs] == [
        ('https://replicate.delivery/p1/out-0.png', 'image/png')
    ]
    with pytest.raises(InvalidWebhookSignature):
        provider('whsec_b3RoZXJzZWNyZXQ=').parse_webhook(signing.sign(SECRET, BODY), BODY)
    # Correctly signed but not a prediction: a bad request (400), not a bad signature
    with pytest.raises(MalformedWebhook):
        provider().parse_webhook(signing.sign(SECRET, b'not json'), b'not json')


def test_the_webhook_secret_is_fetched_only_when_a_webhook_arrives() -> None:
    fetched: list[str] = []

    def fetch() -> str:
        fetched.append('secret')
        return SECRET

    lazy = ReplicateProvider(
        'http://127.0.0.1:9',
        api_token=lambda: 'never fetched',
        webhook_secret=fetch,
        catalog=load_catalog(),
        journal=InMemoryJournal(),
    )
    assert fetched == []
    lazy.parse_webhook(signing.sign(SECRET, BODY), BODY)
    lazy.parse_webhook(signing.sign(SECRET, BODY), BODY)
    assert fetched == ['secret']
