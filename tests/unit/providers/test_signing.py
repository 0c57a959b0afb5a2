"""Webhook signatures (Standard Webhooks, HMAC-SHA256): only the exact bytes, the right secret, and fresh."""

from __future__ import annotations

import time

import pytest

from atelier.providers import InvalidWebhookSignature
from atelier.providers.signing import sign, verify

SECRET = 'mock_atelier_local'
BODY = b'{"id":"tsk_1","status":"succeeded"}'


def test_a_signed_body_verifies() -> None:
    headers = sign(SECRET, BODY, message_id='msg_1')
    assert verify(SECRET, headers, BODY) == 'msg_1'


def test_header_names_are_case_insensitive() -> None:
    headers = {k.upper(): v for k, v in sign(SECRET, BODY).items()}
    verify(SECRET, headers, BODY)


@pytest.mark.parametrize(
    'mutate',
    [
        lambda h, b: (h, b + b' '),  # body altered (even whitespace)
        lambda h, b: ({**h, 'webhook-id': 'msg_other'}, b),  # replayed under another id
        lambda h, b: ({**h, 'webhook-signature': 'v1,' + 'A' * 44}, b),
        lambda h, b: ({**h, 'webhook-signature': h['webhook-signature'].replace('v1,', 'v2,')}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != 'webhook-signature'}, b),
        lambda h, b: ({**h, 'webhook-timestamp': 'soon'}, b),
        lambda h, b: ({}, b),
    ],
)
def test_anything_else_is_refused(mutate: object) -> None:
    headers, body = mutate(sign(SECRET, BODY), BODY)  # type: ignore[operator]
    with pytest.raises(InvalidWebhookSignature):
        verify(SECRET, headers, body)


def test_another_secret_is_refused() -> None:
    with pytest.raises(InvalidWebhookSignature):
        verify('someone-else', sign(SECRET, BODY), BODY)


def test_an_old_or_future_timestamp_is_refused() -> None:
    old = sign(SECRET, BODY, timestamp=int(time.time()) - 3600)
    future = sign(SECRET, BODY, timestamp=int(time.time()) + 3600)
    for headers in (old, future):
        with pytest.raises(InvalidWebhookSignature):
            verify(SECRET, headers, BODY)


def test_one_valid_signature_among_several_is_enough() -> None:
    headers = sign(SECRET, BODY)
    headers['webhook-signature'] = 'v1,bm90LWl0 ' + headers['webhook-signature']
    verify(SECRET, headers, BODY)
