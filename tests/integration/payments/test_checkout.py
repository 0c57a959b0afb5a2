"""Selling on the web: the pack list and Stripe Checkout, against the local fake Stripe over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest

from atelier.payments.service import checkout_idempotency_key
from infra.local.fake_stripe import FakeStripeServer
from tests.integration.payments.conftest import World, set_setting
from tests.support_payments import PACK_100_PRICE, PRO_PRICE


@pytest.fixture(scope='module')
def fake_stripe() -> Iterator[FakeStripeServer]:
    with FakeStripeServer() as fake:
        yield fake


@pytest.fixture
def stripe_api(world: World, fake_stripe: FakeStripeServer, monkeypatch: pytest.MonkeyPatch) -> FakeStripeServer:
    set_setting(monkeypatch, 'STRIPE_API_BASE', fake_stripe.base_url)
    world.stripe_api = fake_stripe
    fake_stripe.requests.clear()
    return fake_stripe


def sessions_of(fake: FakeStripeServer, account: str) -> list[dict]:
    return [s for s in fake.sessions if s['client_reference_id'] == account]


def test_packs_lists_packs_and_plans_with_their_limits(world: World):
    account = world.account()
    reply = world.api('GET', '/v1/packs', account)
    assert reply.status == 200
    assert [(p['id'], p['credits']) for p in reply.body['packs']] == [('pack_100', 100), ('pack_500', 500)]
    plans = {p['id']: p for p in reply.body['plans']}
    assert plans['pro']['period_credits'] == 1000
    assert (plans['free']['max_concurrent_tasks'], plans['pro']['max_concurrent_tasks']) == (2, 5)


def test_packs_needs_a_bearer_token(world: World):
    from tests.utils import http_event

    reply = world.invoke('payments_api', http_event('GET', '/v1/packs'))
    assert reply.status == 401


def test_checkout_of_a_pack_creates_a_payment_session_for_the_account(world: World, stripe_api: FakeStripeServer):
    # Given a signed-in account
    account = world.account()
    # When it asks to buy pack_100
    reply = world.api('POST', '/v1/checkout', account, {'pack_id': 'pack_100'})
    # Then it gets the Checkout URL of a payment-mode session that names the account and the pack
    assert reply.status == 200, reply
    [session] = sessions_of(stripe_api, account)
    assert reply.body == {'url': session['url'], 'session_id': session['id']}
    assert session['mode'] == 'payment'
    assert session['metadata'] == {'account_id': account, 'pack_id': 'pack_100'}
    assert session['amount_total'] == 499
    [request] = stripe_api.requests
    assert request['params']['line_items'] == [{'price': PACK_100_PRICE, 'quantity': '1'}]
    assert request['params']['payment_intent_data'] == {'metadata': {'account_id': account, 'pack_id': 'pack_100'}}
    assert request['params']['success_url'].startswith('https://')
    # And the request carried a deterministic idempotency key derived from account, item and minute
    key = request['headers']['Idempotency-Key']
    assert key.startswith('atelier-checkout-')
    assert key in {checkout_idempotency_key(account, 'pack:pack_100', None, now=t) for t in _this_and_last_minute()}


def _this_and_last_minute() -> list[float]:
    import time

    now = time.time()
    return [now, now - 60]


def test_a_double_tap_gives_the_same_session(world: World, stripe_api: FakeStripeServer):
    account = world.account()
    first = world.api('POST', '/v1/checkout', account, {'pack_id': 'pack_500'})
    second = world.api('POST', '/v1/checkout', account, {'pack_id': 'pack_500'})
    assert first.body['url'] == second.body['url']
    assert len(sessions_of(stripe_api, account)) == 1


def test_the_clients_idempotency_key_scopes_sessions(world: World, stripe_api: FakeStripeServer):
    account = world.account()
    a = world.api('POST', '/v1/checkout', account, {'pack_id': 'pack_100'}, headers={'idempotency-key': 'tap-1'})
    b = world.api('POST', '/v1/checkout', account, {'pack_id': 'pack_100'}, headers={'idempotency-key': 'tap-2'})
    a_again = world.api('POST', '/v1/checkout', account, {'pack_id': 'pack_100'}, headers={'idempotency-key': 'tap-1'})
    assert a.body['url'] != b.body['url'] and a.body['url'] == a_again.body['url']
    assert len(sessions_of(stripe_api, account)) == 2
    keys = {r['headers']['Idempotency-Key'] for r in stripe_api.requests}
    assert checkout_idempotency_key(account, 'pack:pack_100', 'tap-1') in keys


def test_checkout_of_a_plan_creates_a_subscription_session(world: World, stripe_api: FakeStripeServer):
    account = world.account()
    reply = world.api('POST', '/v1/checkout', account, {'plan_id': 'pro'})
    assert reply.status == 200
    [session] = sessions_of(stripe_api, account)
    assert session['mode'] == 'subscription' and session['metadata']['plan_id'] == 'pro'
    params = stripe_api.requests[-1]['params']
    assert params['line_items'][0]['price'] == PRO_PRICE
    assert params['subscription_data'] == {'metadata': {'account_id': account, 'plan_id': 'pro'}}


@pytest.mark.parametrize(
    ('body', 'code'),
    [
        ({'pack_id': 'pack_100', 'plan_id': 'pro'}, 'validation_error'),
        ({'pack_id': None, 'plan_id': 'pro'}, 'validation_error'),
        ({'pack_id': ''}, 'validation_error'),
        ({}, 'validation_error'),
        ({'pack_id': 'pack_100', 'credits': 5}, 'validation_error'),
    ],
)
def test_a_checkout_that_is_not_exactly_one_pack_or_plan_is_422(world: World, stripe_api: FakeStripeServer, body, code):
    account = world.account()
    reply = world.api('POST', '/v1/checkout', account, body)
    assert reply.status == 422 and reply.body['error']['code'] == code
    assert stripe_api.requests == []


@pytest.mark.parametrize('body', [{'pack_id': 'pack_999'}, {'plan_id': 'free'}])
def test_checkout_of_something_not_for_sale_is_404(world: World, stripe_api: FakeStripeServer, body):
    account = world.account()
    reply = world.api('POST', '/v1/checkout', account, body)
    assert reply.status == 404 and reply.body['error']['code'] == 'unknown_item'
    assert stripe_api.requests == []


def test_a_subscriber_cannot_check_out_the_same_plan_again(world: World, stripe_api: FakeStripeServer):
    from tests.support_payments import invoice, stripe_event

    account = world.account()
    world.stripe(stripe_event('invoice.paid', invoice(account, subscription='sub_again')))
    reply = world.api('POST', '/v1/checkout', account, {'plan_id': 'pro'})
    assert reply.status == 409 and reply.body['error']['code'] == 'already_subscribed'


def test_when_stripe_refuses_checkout_is_503(world: World, stripe_api: FakeStripeServer):
    boto3.client('ssm', region_name='us-east-1').put_parameter(
        Name='/atelier/test/stripe-api-key', Value='rk_not_a_secret_key', Type='SecureString', Overwrite=True
    )
    account = world.account()
    reply = world.api('POST', '/v1/checkout', account, {'pack_id': 'pack_100'})
    assert reply.status == 503 and reply.body['error']['code'] == 'checkout_unavailable'


def test_a_checkout_paid_on_the_fake_stripe_grants_the_pack_through_the_webhook(
    world: World, stripe_api: FakeStripeServer
):
    # Given a checkout session created through the API
    account = world.account()
    session_id = world.api('POST', '/v1/checkout', account, {'pack_id': 'pack_500'}).body['session_id']
    # When Stripe reports it paid (twice, as it may)
    event = stripe_api.completed_event(session_id)
    body = json.dumps(event)
    assert world.stripe(body).status == 200
    assert world.stripe(body).status == 200
    # Then the pack's credits are there, once
    assert world.balance(account) == 500
