"""Stripe's published example objects (stripe-mock's fixtures3) as snapshot events, signed and posted through the
real webhook handler, on moto. What each test changes in an object is written where it is changed."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.contract.payments.samples import sample, stripe_event
from tests.integration.payments.conftest import World, personal_data_in
from tests.support_payments import PRO_PRICE

DAY = 24 * 3600


def post(world: World, event: dict[str, Any]) -> dict[str, Any]:
    """Post an event as Stripe would (signed raw body); check the body was stored exactly as received
    (the raw item) and the record has none of its personal data."""
    raw = json.dumps(event, indent=2)
    reply = world.stripe(raw)
    assert reply.status == 200, reply
    assert world.stored('stripe', event['id']) is not None
    assert world.raw('stripe', event['id']) == raw.encode()
    assert personal_data_in(world.event_item('stripe', event['id']) or {}, event) == []  # the record kept forever
    return dict(reply.body)


def paid_checkout(account: str) -> dict[str, Any]:
    session = sample('stripe/checkout.session.json')
    assert (session['mode'], session['livemode']) == ('payment', False)
    # ours: the account and the catalog pack (what Atelier puts on the sessions it creates)
    session.update(client_reference_id=account, metadata={'account_id': account, 'pack_id': 'pack_100'})
    # the example is an open session; completed and paid, it has the pack's price as its total
    session.update(status='complete', payment_status='paid', amount_subtotal=499, amount_total=499, currency='usd')
    return session


@pytest.mark.parametrize(
    ('event_type', 'fixture'),
    [
        ('checkout.session.completed', 'checkout.session'),
        ('invoice.paid', 'invoice'),
        ('charge.refunded', 'charge'),
        ('charge.dispute.created', 'dispute'),
        ('charge.dispute.closed', 'dispute'),
    ],
)
def test_every_fixture_as_published_is_answered_200_and_stored_raw(world: World, event_type: str, fixture: str):
    event = stripe_event(event_type, sample(f'stripe/{fixture}.json'), event_id=f'evt_as_published_{fixture}')
    assert post(world, event)['status'] in ('processed', 'ignored', 'parked')


def test_checkout_completed_grants_the_pack_and_refunds_take_it_back_in_proportion(world: World):
    account = world.account()
    session = paid_checkout(account)
    assert (
        post(world, stripe_event('checkout.session.completed', session, event_id='evt_co_1'))['status'] == 'processed'
    )
    assert world.balance(account) == 100
    assert world.business_ids(account) == [f'stripe:checkout:{session["id"]}']
    # charge.refunded for half the charge (ours: the charge's PaymentIntent is the session's)
    charge = sample('stripe/charge.json')
    charge.update(payment_intent=session['payment_intent'], amount_refunded=charge['amount'] // 2, refunded=False)
    assert post(world, stripe_event('charge.refunded', charge, event_id='evt_co_2'))['status'] == 'processed'
    assert world.balance(account) == 50
    # then in full
    charge.update(amount_refunded=charge['amount'], refunded=True)
    assert post(world, stripe_event('charge.refunded', charge, event_id='evt_co_3'))['status'] == 'processed'
    assert world.balance(account) == 0
    assert world.reconciled(account)


@pytest.mark.parametrize(('closed', 'balance'), [('won', 100), ('lost', 0)])
def test_a_dispute_takes_the_credits_and_its_close_decides(world: World, closed: str, balance: int):
    account = world.account()
    session = paid_checkout(account)
    post(world, stripe_event('checkout.session.completed', session, event_id='evt_dp_1'))
    dispute = sample('stripe/dispute.json')
    assert dispute['status'] == 'warning_needs_response'
    dispute['payment_intent'] = session['payment_intent']  # ours: the disputed payment
    assert post(world, stripe_event('charge.dispute.created', dispute, event_id='evt_dp_2'))['status'] == 'processed'
    assert world.balance(account) == 0
    dispute['status'] = closed
    assert post(world, stripe_event('charge.dispute.closed', dispute, event_id='evt_dp_3'))['status'] == 'processed'
    assert world.balance(account) == balance


def test_the_example_invoice_is_a_one_off_invoice_and_grants_nothing(world: World):
    invoice = sample('stripe/invoice.json')
    assert (invoice['billing_reason'], invoice['subscription']) == ('manual', None)
    reply = post(world, stripe_event('invoice.paid', invoice, event_id='evt_in_1'))
    assert (reply['status'], reply['detail']) == ('ignored', 'not a subscription invoice')


def test_the_example_invoice_as_a_paid_subscription_period_grants_it(world: World):
    account = world.account()
    invoice = sample('stripe/invoice.json')
    now = int(time.time())
    # ours: the subscription, its account, the catalog's pro price
    invoice.update(subscription='sub_1OPouhJN5vQBdWEx', subscription_details={'metadata': {'account_id': account}})
    line = invoice['lines']['data'][0]
    line['price']['id'] = PRO_PRICE
    # paid, for the period that starts now (the example is a 2023 draft)
    line.update(amount=999, period={'start': now, 'end': now + 30 * DAY})
    invoice.update(
        status='paid',
        paid=True,
        amount_paid=999,
        amount_remaining=0,
        billing_reason='subscription_create',
        payment_intent='pi_1OPouhJN5vQBdWExInvoice',
    )
    assert post(world, stripe_event('invoice.paid', invoice, event_id='evt_in_2'))['status'] == 'processed'
    assert (world.balance(account), world.plan(account)) == (1000, 'pro')
    assert world.business_ids(account) == [f'stripe:invoice:{invoice["id"]}']


def test_a_basil_shaped_invoice_grants_the_period_and_a_refund_of_its_payment_takes_it_back(world: World):
    account = world.account()
    invoice = sample('stripe/invoice.basil.json')
    now = int(time.time())
    invoice['parent']['subscription_details']['metadata'] = {'account_id': account}
    line = invoice['lines']['data'][0]
    line['pricing']['price_details']['price'] = PRO_PRICE
    line['period'] = {'start': now, 'end': now + 30 * DAY}
    # A webhook's invoice does not name its PaymentIntent: `payments` is includable ("This field is not included
    # by default. To include it in the response, expand the payments field",
    # https://docs.stripe.com/api/invoices/object#invoice_object-payments) and `payment_intent` was removed in
    # 2025-03-31.basil (https://docs.stripe.com/changelog/basil/2025-03-31/add-support-for-multiple-partial-payments-on-invoices).
    # Stripe knows the InvoicePayment, which GET /v1/invoice_payments?invoice= lists.
    assert 'payments' not in invoice and 'payment_intent' not in invoice
    world.stripe_api.objects.add_invoice_payment(sample('stripe/invoice_payment.basil.json'))
    assert post(world, stripe_event('invoice.paid', invoice, event_id='evt_in_3'))['status'] == 'processed'
    assert (world.balance(account), world.plan(account)) == (1000, 'pro')
    # the period's payment is the invoice payment's PaymentIntent, so a refund of it finds the grant
    assert world.table().load_state('PAYMENT#stripe:pi_3RBasilExample01')[0]['grant']['credits'] == 1000
    charge = sample('stripe/charge.json')
    charge.update(payment_intent='pi_3RBasilExample01', amount=999, amount_refunded=999, refunded=True)
    assert post(world, stripe_event('charge.refunded', charge, event_id='evt_in_4'))['status'] == 'processed'
    assert world.balance(account) == 0


def test_a_fixture_with_a_bad_signature_is_refused_and_not_stored(world: World):
    event = stripe_event('checkout.session.completed', paid_checkout(world.account()), event_id='evt_bad_sig')
    reply = world.stripe(event, secret='whsec_not_ours')
    assert (reply.status, reply.body['error']['code']) == (401, 'invalid_signature')
    assert world.stored('stripe', 'evt_bad_sig') is None
