"""Who may post events: Stripe's signature on the raw body, RevenueCat's configured Authorization value."""

from __future__ import annotations

import base64
import hmac
import json
import time

import pytest

from atelier.api.http import raw_body
from atelier.payments.errors import InvalidSignature, MalformedEvent
from atelier.payments.revenuecat_events import authorization_matches
from atelier.payments.stripe_gateway import verify_event
from tests.support_payments import STRIPE_SECRET, stripe_signature

BODY = json.dumps({'id': 'evt_1', 'object': 'event', 'type': 'checkout.session.completed', 'data': {'object': {}}})


def verify(body: str | bytes, header: str | None, secret: str = STRIPE_SECRET) -> dict:
    return verify_event(body.encode() if isinstance(body, str) else body, header, secret=secret, tolerance=300)


def test_a_valid_signature_gives_the_event():
    assert verify(BODY, stripe_signature(BODY))['id'] == 'evt_1'


def test_the_signature_is_stripes_own_scheme():
    # Given the header the stripe library itself generates for this body
    import stripe

    header = stripe.WebhookSignature.generate_signature_header(BODY, STRIPE_SECRET)
    # Then our helper and our verifier agree with it
    assert verify(BODY, header)['type'] == 'checkout.session.completed'
    assert header.split(',')[1] == stripe_signature(BODY, timestamp=int(header.split(',')[0][2:])).split(',')[1]


@pytest.mark.parametrize(
    ('body', 'header'),
    [
        pytest.param(BODY.replace('evt_1', 'evt_2'), stripe_signature(BODY), id='tampered-body'),
        pytest.param(BODY, stripe_signature(BODY, secret='whsec_other'), id='wrong-secret'),
        pytest.param(BODY, None, id='missing-header'),
        pytest.param(BODY, '', id='empty-header'),
        pytest.param(BODY, stripe_signature(BODY, scheme='v0'), id='v0-only'),
        pytest.param(BODY, 'v1=abc', id='no-timestamp'),
        pytest.param(BODY, 'nonsense', id='malformed'),
        pytest.param(BODY, stripe_signature(BODY, timestamp=int(time.time()) - 301), id='stale'),
        pytest.param(b'\xff\xfe' + BODY.encode(), stripe_signature(BODY), id='not-utf8'),
    ],
)
def test_bad_signatures_are_refused(body, header):
    with pytest.raises(InvalidSignature) as refused:
        verify(body, header)
    assert refused.value.kind.value == 'unauthorized'  # 401, like every webhook whose sender is not proven


def test_no_secret_refuses_everything():
    with pytest.raises(InvalidSignature):
        verify(BODY, stripe_signature(BODY, secret=''), secret='')


def test_one_matching_v1_among_several_is_enough():
    t = int(time.time())
    stale_secret = stripe_signature(BODY, secret='whsec_rolled', timestamp=t).split(',')[1]
    current = stripe_signature(BODY, timestamp=t).split(',')[1]
    assert verify(BODY, f't={t},{stale_secret},{current}')['id'] == 'evt_1'


def test_the_tolerance_comes_from_settings():
    old = stripe_signature(BODY, timestamp=int(time.time()) - 1000)
    assert verify_event(BODY.encode(), old, secret=STRIPE_SECRET, tolerance=3600)['id'] == 'evt_1'


@pytest.mark.parametrize(
    'body',
    ['not json', '[1, 2]', json.dumps({'object': 'v2.core.event', 'id': 'evt_1', 'type': 'x'}), json.dumps({'id': 1})],
)
def test_a_signed_body_that_is_no_event_is_malformed(body):
    with pytest.raises(MalformedEvent):
        verify(body, stripe_signature(body))


def test_api_gateway_base64_bodies_verify_on_the_decoded_bytes():
    # Given API Gateway delivered the body base64-encoded
    event = {'body': base64.b64encode(BODY.encode()).decode(), 'isBase64Encoded': True}
    # Then the raw bytes are the ones Stripe signed
    assert raw_body(event) == BODY.encode()
    assert verify(raw_body(event), stripe_signature(BODY))['id'] == 'evt_1'


# ---------------------------------------------------------------- RevenueCat


@pytest.mark.parametrize(
    ('header', 'secret', 'ok'),
    [
        ('Bearer rc_secret', 'rc_secret', True),
        ('rc_secret', 'rc_secret', True),
        ('Bearer rc_secret ', 'rc_secret', True),
        ('Bearer rc_secreT', 'rc_secret', False),
        ('Bearer rc_secret_longer', 'rc_secret', False),
        ('', 'rc_secret', False),
        (None, 'rc_secret', False),
        ('Bearer ', '', False),
        ('', '', False),
        (None, None, False),
        ('Bearer None', None, False),
        ('   ', '   ', False),
    ],
)
def test_revenuecat_authorization(header, secret, ok):
    assert authorization_matches(header, secret) is ok


def test_revenuecat_authorization_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, 'compare_digest', spy)
    assert authorization_matches('Bearer rc_secret', 'rc_secret')
    assert not authorization_matches('Bearer nope', 'rc_secret')
    assert len(calls) == 4  # both accepted forms are always compared, match or not
