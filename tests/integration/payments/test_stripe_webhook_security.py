"""Stripe webhook authenticity: the signature on the raw body decides, and refusals store nothing."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.payments.conftest import World, set_setting
from tests.support_payments import checkout_session, stripe_event, stripe_signature


def paid_pack(world: World) -> tuple[str, dict]:
    account = world.account()
    return account, stripe_event('checkout.session.completed', checkout_session(account))


def test_a_signed_event_is_accepted_stored_and_granted(world: World):
    # Given a paid checkout signed with the endpoint secret
    account, event = paid_pack(world)
    # When Stripe posts it
    reply = world.stripe(event)
    # Then it is acknowledged, stored raw, and the pack's credits are there
    assert reply.status == 200 and reply.body['status'] == 'processed'
    assert world.stored('stripe', event['id']).status == 'processed'
    assert world.balance(account) == 100


@pytest.mark.parametrize(
    'tamper',
    [
        pytest.param(lambda body, sig: (body.replace('"paid"', '"paid" '), sig), id='tampered-body'),
        pytest.param(lambda body, sig: (body, stripe_signature(body, secret='whsec_wrong')), id='wrong-secret'),
        pytest.param(lambda body, sig: (body, ''), id='missing-header'),
        pytest.param(lambda body, sig: (body, sig.replace('v1=', 'v0=')), id='v0-only'),
        pytest.param(lambda body, sig: (body, 'garbage'), id='malformed-header'),
        pytest.param(lambda body, sig: (body, 't=notanumber,v1=abc'), id='bad-timestamp'),
        pytest.param(
            lambda body, sig: (body, stripe_signature(body, timestamp=int(time.time()) - 301)), id='older-than-300s'
        ),
    ],
)
def test_a_bad_signature_is_refused_with_401_and_nothing_is_stored(world: World, tamper):
    # Given a genuine event whose body or signature was tampered with
    account, event = paid_pack(world)
    body = json.dumps(event)
    body, header = tamper(body, stripe_signature(body))
    # When it is posted
    reply = world.stripe(body, header=header)
    # Then it is refused (401: its sender is not proven), nothing is stored and no credit moves
    assert reply.status == 401
    assert reply.body['error']['code'] == 'invalid_signature'
    assert world.event_items() == []
    assert world.balance(account) == 0


def test_one_valid_signature_among_several_v1_passes(world: World):
    # Given a header carrying the signatures of a rolled secret and of the current one
    account, event = paid_pack(world)
    body = json.dumps(event)
    timestamp = int(time.time())
    old = stripe_signature(body, secret='whsec_previous', timestamp=timestamp).split(',')[1]
    current = stripe_signature(body, timestamp=timestamp).split(',')[1]
    # When it is posted
    reply = world.stripe(body, header=f't={timestamp},{old},{current},v0=deadbeef')
    # Then it verifies
    assert reply.status == 200
    assert world.balance(account) == 100


def test_a_future_timestamp_within_the_signature_is_accepted(world: World):
    # Stripe's library rejects only old timestamps (clock skew must not lose payments)
    _account, event = paid_pack(world)
    body = json.dumps(event)
    assert world.stripe(body, header=stripe_signature(body, timestamp=int(time.time()) + 600)).status == 200


def test_a_base64_body_from_api_gateway_verifies_like_a_plain_one(world: World):
    # Given two paid checkouts, one delivered base64-encoded by API Gateway
    account, event = paid_pack(world)
    other = stripe_event('checkout.session.completed', checkout_session(account))
    # When both are posted
    plain = world.stripe(event)
    encoded = world.stripe(other, base64_body=True)
    # Then both verify on the raw bytes and both grant
    assert (plain.status, encoded.status) == (200, 200)
    assert world.balance(account) == 200


def test_invalid_base64_is_refused(world: World):
    from tests.utils import http_event

    event = http_event(
        'POST',
        '/webhooks/stripe',
        headers={'content-type': 'application/json', 'stripe-signature': 't=1,v1=00'},
    )
    event.update(body='%%% not base64 %%%', isBase64Encoded=True)
    reply = world.invoke('stripe_webhook', event)
    assert reply.status == 400
    assert world.event_items() == []


def test_malformed_json_with_a_valid_signature_is_a_400(world: World):
    # Given a correctly signed body that is not JSON
    body = '{"id": "evt_1", "type": '
    # When it is posted
    reply = world.stripe(body)
    # Then it is a bad request, not a server error, and nothing is stored
    assert reply.status == 400
    assert reply.body['error']['code'] == 'malformed_json'
    assert world.event_items() == []


def test_signed_json_that_is_not_a_stripe_event_is_a_400(world: World):
    # Given a correctly signed JSON object that is no Stripe event
    reply = world.stripe('{"hello": "world"}')
    # Then it is a bad request, and nothing is stored
    assert reply.status == 400
    assert reply.body['error']['code'] == 'malformed_event'


def test_a_test_mode_event_on_a_live_stage_is_ignored_with_200(world: World, monkeypatch: pytest.MonkeyPatch):
    # Given a live stage
    set_setting(monkeypatch, 'PAYMENTS_LIVE_MODE', 'true')
    account, event = paid_pack(world)
    # When a test-mode event arrives (livemode false)
    reply = world.stripe(event)
    # Then it is acknowledged and logged as ignored, and no credit moves
    assert reply.status == 200 and reply.body['status'] == 'ignored'
    assert world.stored('stripe', event['id']).status == 'ignored'
    assert world.balance(account) == 0


def test_a_live_event_on_a_test_stage_is_rejected(world: World):
    # Given a test stage and a live-mode event
    account = world.account()
    event = stripe_event('checkout.session.completed', checkout_session(account), livemode=True)
    # When it arrives
    reply = world.stripe(event)
    # Then it is refused (and kept, marked rejected, for ops), and no credit moves
    assert reply.status == 400 and reply.body['error']['code'] == 'mode_mismatch'
    assert world.stored('stripe', event['id']).status == 'rejected'
    assert world.balance(account) == 0


def test_unknown_event_types_and_extra_fields_are_acknowledged_and_ignored(world: World):
    # Given an event type Atelier does not use, with fields it has never seen
    event = stripe_event('customer.tax_id.created', {'id': 'txi_1', 'object': 'tax_id', 'brand_new_field': {'x': 1}})
    event['another_new_top_level_field'] = True
    # When it arrives
    reply = world.stripe(event)
    # Then it is a 200 (forward compatible) and stored as ignored
    assert reply.status == 200 and reply.body['status'] == 'ignored'
    assert world.stored('stripe', event['id']).status == 'ignored'


def test_no_webhook_secret_configured_refuses_everything(world: World):
    # Given the secret is missing from SSM
    import boto3

    boto3.client('ssm', region_name='us-east-1').delete_parameter(Name='/atelier/test/stripe-webhook-secret')
    _account, event = paid_pack(world)
    # When a (correctly signed) event arrives
    reply = world.stripe(event)
    # Then it is refused: no secret, no trust
    assert reply.status == 401
    assert world.event_items() == []
