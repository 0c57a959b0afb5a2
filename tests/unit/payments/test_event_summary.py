"""What the permanent record of a provider event keeps: ids and money, never a person's details."""

from __future__ import annotations

import json
from typing import Any

import pytest

from atelier.payments.store import EventSummary
from atelier.payments.summary import revenuecat_summary, stripe_summary, summarize_event
from tests.support_payments import (
    charge,
    checkout_session,
    dispute,
    invoice,
    rc_purchase,
    stripe_event,
    subscription_object,
)

PERSON = {
    'email': 'jenny.rosen@example.com',
    'name': 'Jenny Rosen',
    'phone': '+15555550100',
    'address': {'line1': '510 Townsend St', 'city': 'San Francisco', 'postal_code': '94103', 'country': 'US'},
}


def text_of(summary: EventSummary) -> str:
    return json.dumps([summary.occurred_at, summary.live, dict(summary.refs), summary.amount, summary.currency])


def test_a_checkout_keeps_its_ids_and_total_and_drops_the_buyer():
    # Given a paid checkout whose customer is expanded (an object with the buyer's details) and who left an address
    session = checkout_session('acc_1', session_id='cs_test_1', payment_intent='pi_1', amount_total=499)
    session.update(customer={'id': 'cus_1', 'object': 'customer', **PERSON}, customer_details=PERSON)
    event = stripe_event('checkout.session.completed', session, created=1_700_000_000)
    # When it is summarized
    summary = summarize_event('stripe', event)
    # Then the record keeps the ids, the total and when it happened, and nothing about the person
    assert summary == EventSummary(
        occurred_at='2023-11-14T22:13:20.000000Z',
        live=False,
        refs={'checkout_session': 'cs_test_1', 'payment_intent': 'pi_1', 'customer': 'cus_1'},
        amount=499,
        currency='usd',
    )
    assert not [value for value in ('jenny', 'Jenny', 'Townsend', '94103', '5555') if value in text_of(summary)]


@pytest.mark.parametrize('legacy', [False, True], ids=['basil', 'legacy'])
def test_an_invoice_keeps_its_subscription_payment_and_amount_paid(legacy: bool):
    obj = invoice(
        'acc_1',
        subscription='sub_1',
        invoice_id='in_1',
        payment_intent='pi_2',
        amount_paid=999,
        legacy=legacy,
        expanded=True,
    )
    obj['customer_email'], obj['customer_address'] = PERSON['email'], PERSON['address']
    summary = stripe_summary(stripe_event('invoice.paid', obj))
    assert dict(summary.refs) == {
        'invoice': 'in_1',
        'subscription': 'sub_1',
        'payment_intent': 'pi_2',
        'customer': 'cus_test',
    }
    assert (summary.amount, summary.currency) == (999, 'usd')
    assert PERSON['email'] not in text_of(summary)


def test_a_refund_keeps_the_cumulative_amount_refunded():
    obj = charge(payment_intent='pi_3', amount=2000, amount_refunded=500, charge_id='ch_3')
    obj['billing_details'] = PERSON
    summary = stripe_summary(stripe_event('charge.refunded', obj))
    assert dict(summary.refs) == {'charge': 'ch_3', 'payment_intent': 'pi_3'}
    assert (summary.amount, summary.currency) == (500, 'usd')


def test_a_dispute_keeps_the_disputed_amount():
    obj = dispute(payment_intent='pi_4', amount=1500, status='needs_response', dispute_id='dp_4', charge_id='ch_4')
    summary = stripe_summary(stripe_event('charge.dispute.created', obj))
    assert dict(summary.refs) == {'dispute': 'dp_4', 'charge': 'ch_4', 'payment_intent': 'pi_4'}
    assert summary.amount == 1500


def test_a_subscription_states_no_amount():
    obj = subscription_object('acc_1', subscription_id='sub_5', customer='cus_5')
    summary = stripe_summary(stripe_event('customer.subscription.updated', obj, livemode=True))
    assert dict(summary.refs) == {'subscription': 'sub_5', 'customer': 'cus_5'}
    assert (summary.amount, summary.currency, summary.live) == (None, None, True)


def test_a_store_purchase_keeps_its_transactions_product_and_price_in_cents_without_subscriber_attributes():
    body = rc_purchase(
        'NON_RENEWING_PURCHASE', 'acc_1', 'credits_100', 'txn_1', price=4.99, event_timestamp_ms=1_700_000_000_123
    )
    body['event']['subscriber_attributes'] = {'$email': {'value': PERSON['email']}, '$displayName': {'value': 'Jenny'}}
    summary = summarize_event('revenuecat', body)
    assert summary.occurred_at == '2023-11-14T22:13:20.123000Z'
    assert summary.live is False  # SANDBOX
    assert summary.refs['transaction'] == 'txn_1' and summary.refs['product'] == 'credits_100'
    assert summary.refs['store'] == 'APP_STORE'
    assert (summary.amount, summary.currency) == (499, 'usd')
    assert 'Jenny' not in text_of(summary) and '@' not in text_of(summary)


def test_a_store_refund_keeps_its_negative_price():
    body = rc_purchase('CANCELLATION', 'acc_1', 'credits_100', 'txn_2', price=-4.99, cancel_reason='CUSTOMER_SUPPORT')
    assert revenuecat_summary(body).amount == -499


@pytest.mark.parametrize(
    'event',
    [
        {},
        {'data': 'nope', 'created': 'yesterday', 'livemode': 'yes'},
        {'data': {'object': {'object': 'checkout.session', 'id': 'not an id, an email: a@b.c', 'amount_total': 1.5}}},
        {
            'data': {
                'object': {'object': 'charge', 'customer': {'email': 'a@b.c'}, 'amount': True, 'currency': 'dollars'}
            }
        },
        {'created': 10**20, 'data': {'object': []}},
    ],
)
def test_an_odd_stripe_payload_gives_what_it_can_and_never_raises(event: dict[str, Any]):
    summary = stripe_summary(event)
    assert '@' not in text_of(summary)
    assert summary.amount is None and summary.currency is None


@pytest.mark.parametrize(
    'body',
    [{}, {'event': None}, {'event': {'price': float('nan'), 'event_timestamp_ms': -(10**20), 'transaction_id': 7}}],
)
def test_an_odd_revenuecat_payload_gives_what_it_can_and_never_raises(body: dict[str, Any]):
    assert revenuecat_summary(body).refs == {}
    assert revenuecat_summary(body).amount is None


def test_an_unknown_provider_has_an_empty_summary():
    assert summarize_event('paddle', {'id': 'x'}) == EventSummary()
