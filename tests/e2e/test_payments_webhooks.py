"""Payments over real HTTP on the offline stack: signed provider webhooks, repeated and out of order,
change balances exactly once; refunds take credits back (checked through /v1/me and /v1/ledger)."""

from __future__ import annotations

import json
import random
from typing import Any

from infra.local.payment_events import revenuecat_headers, stripe_headers
from tests.e2e.conftest import Stack, ledger_of, me
from tests.support_payments import (
    RC_AUTH,
    STRIPE_SECRET,
    charge,
    rc_event,
    rc_purchase,
    stripe_event,
)


def post_stripe(stack: Stack, event: dict[str, Any] | str, *, secret: str = STRIPE_SECRET) -> Any:
    """Stripe posting ``event`` (signed now; a string is posted as it is): the headers of the shared builders."""
    body = event if isinstance(event, str) else json.dumps(event)
    return stack.http.post('/webhooks/stripe', content=body.encode(), headers=stripe_headers(body, secret=secret))


def post_rc(stack: Stack, body: dict[str, Any], *, authorization: str = f'Bearer {RC_AUTH}') -> Any:
    headers = revenuecat_headers(authorization=authorization)
    return stack.http.post('/webhooks/revenuecat', content=json.dumps(body).encode(), headers=headers)


def test_a_stripe_checkout_paid_and_refunded_moves_credits_once(stack: Stack):
    # Given a user who opened a Checkout Session for pack_500 (on the fake Stripe)
    user = stack.sign_in()
    checkout = user.post('/v1/checkout', json={'pack_id': 'pack_500'})
    assert checkout.status_code == 200, checkout.text
    assert checkout.json()['url'].startswith('http://127.0.0.1:')
    fake = stack.server.services['stripe']
    completed = fake.completed_event(checkout.json()['session_id'])
    session = completed['data']['object']
    succeeded = {**completed, 'id': completed['id'] + '_async', 'type': 'checkout.session.async_payment_succeeded'}
    # When Stripe delivers the completion three times and the async success once, shuffled
    deliveries = [completed] * 3 + [succeeded]
    random.Random(7).shuffle(deliveries)
    for event in deliveries:
        response = post_stripe(stack, event)
        assert response.status_code == 200, response.text
    # Then the pack is granted once
    assert me(user)['balance'] == {'available': 500, 'held': 0}
    assert [(e['kind'], e['amount']) for e in ledger_of(user)] == [('grant', 500)]
    # When two partial refunds arrive newest first, each twice
    refunds = [
        stripe_event(
            'charge.refunded', charge(payment_intent=session['payment_intent'], amount=1999, amount_refunded=r)
        )
        for r in (1000, 500)
    ]
    for event in refunds + refunds:
        assert post_stripe(stack, event).status_code == 200
    # Then credits were taken back in proportion to the cumulative refund, once
    entries = ledger_of(user)
    assert me(user)['balance']['available'] == 500 - 250
    assert sum(e['amount'] for e in entries) == 250
    assert sorted(e['kind'] for e in entries) == ['claw_back', 'grant']


def test_a_bad_stripe_signature_is_refused_over_http(stack: Stack):
    user = stack.sign_in()
    fake = stack.server.services['stripe']
    checkout = user.post('/v1/checkout', json={'pack_id': 'pack_100'}).json()
    response = post_stripe(stack, fake.completed_event(checkout['session_id']), secret='whsec_not_ours')
    assert response.status_code == 401
    assert response.json()['error']['code'] == 'invalid_signature'
    assert me(user)['balance']['available'] == 0


def test_revenuecat_events_repeated_and_shuffled_grant_once_and_a_refund_claws_back(stack: Stack):
    # Given a user who buys the pro subscription and a credit pack in the app, and gets the pack refunded
    user = stack.sign_in()
    uid = user.account_id
    events = [
        rc_purchase('INITIAL_PURCHASE', uid, 'pro_monthly', f'txn_sub_{uid}', original_transaction_id=f'otx_{uid}'),
        rc_purchase('NON_RENEWING_PURCHASE', uid, 'credits_100', f'txn_pack_{uid}'),
        rc_event(
            'CANCELLATION',
            uid,
            cancel_reason='CUSTOMER_SUPPORT',
            transaction_id=f'txn_pack_{uid}',
            product_id='credits_100',
            price=-4.99,
        ),
    ]
    # When RevenueCat delivers each event three times, in shuffled order
    deliveries = events * 3
    random.Random(11).shuffle(deliveries)
    for body in deliveries:
        response = post_rc(stack, body)
        assert response.status_code == 200, response.text
    # Then the subscription's period was granted once, the refunded pack taken back, and the plan is pro
    profile = me(user)
    assert profile['plan'] == 'pro'
    assert profile['limits']['max_concurrent_tasks'] == 5
    assert profile['balance'] == {'available': 1000, 'held': 0}
    entries = ledger_of(user)
    assert sorted((e['kind'], e['amount']) for e in entries) == [('claw_back', -100), ('grant', 100), ('grant', 1000)]


def test_revenuecat_without_the_right_authorization_is_401(stack: Stack):
    user = stack.sign_in()
    body = rc_purchase('NON_RENEWING_PURCHASE', user.account_id, 'credits_100', f'txn_{user.account_id}')
    assert post_rc(stack, body, authorization='Bearer wrong').status_code == 401
    assert me(user)['balance']['available'] == 0


def test_packs_are_listed(stack: Stack):
    user = stack.sign_in()
    response = user.get('/v1/packs')
    assert response.status_code == 200
    assert [p['id'] for p in response.json()['packs']] == ['pack_100', 'pack_500']


def test_a_lost_stripe_webhook_is_recovered_by_the_backfill_job_once(stack: Stack):
    # Given a user who paid for pack_100, but whose webhook never reached Atelier (Stripe logged it undelivered),
    # with no scheduled backfill (every 2 s offline) running until the test has run the job itself
    user = stack.sign_in()
    with stack.server.stack.paused_schedules():
        checkout = user.post('/v1/checkout', json={'pack_id': 'pack_100'})
        fake = stack.server.services['stripe']
        lost = fake.add_event(fake.completed_event(checkout.json()['session_id']), delivered=False)
        assert me(user)['balance']['available'] == 0
        # When the daily backfill job runs (its scheduled event), twice
        scheduled = {'source': 'aws.events', 'detail-type': 'Scheduled Event', 'detail': {}}
        first = stack.invoke('BackfillPaymentsFunction', scheduled)
        second = stack.invoke('BackfillPaymentsFunction', scheduled)
    # Then the pack is granted exactly once, and the late webhook changes nothing either
    assert me(user)['balance'] == {'available': 100, 'held': 0}
    assert post_stripe(stack, lost).status_code == 200
    assert [(e['kind'], e['amount']) for e in ledger_of(user)] == [('grant', 100)]
    assert (first['stripe']['processed'], first['stripe']['duplicate']) == (1, 0)
    assert (second['stripe']['processed'], second['stripe']['duplicate']) == (0, 1)
