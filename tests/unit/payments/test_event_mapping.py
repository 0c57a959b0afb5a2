"""What each provider event means, on in-memory fakes of the ledger and the events table."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from atelier.ledger.errors import LedgerUnavailable
from atelier.payments.errors import ModeMismatch, PaymentsUnavailable
from atelier.payments.revenuecat_events import RevenueCatEvents
from atelier.payments.stripe_events import StripeEvents, _dispute_status, invoice_payment_intent
from tests.support_payments import (
    PRO_PRICE,
    charge,
    checkout_session,
    dispute,
    invoice,
    rc_event,
    rc_purchase,
    stripe_event,
    subscription_object,
)
from tests.unit.payments.fakes import FakeInvoicePayments, make_book


@pytest.fixture
def stripe_api() -> FakeInvoicePayments:
    return FakeInvoicePayments()


@pytest.fixture
def fx(stripe_api: FakeInvoicePayments):
    book, ledger, _table = make_book()
    ledger.open('acc_1')
    return StripeEvents(book, live=False, invoice_payments=stripe_api), RevenueCatEvents(book, live=False), ledger


def test_checkout_paid_grants_the_catalog_pack(fx):
    stripe, _, ledger = fx
    outcome = stripe.apply(stripe_event('checkout.session.completed', checkout_session('acc_1', pack_id='pack_500')))
    assert outcome.status == 'processed' and outcome.account_id == 'acc_1'
    assert ledger.booked == {next(iter(ledger.booked)): ('acc_1', 'grant', 500)}
    assert next(iter(ledger.booked)).startswith('stripe:checkout:cs_test_')


def test_checkout_account_falls_back_to_metadata(fx):
    stripe, _, ledger = fx
    session = {**checkout_session('acc_1'), 'client_reference_id': None}
    stripe.apply(stripe_event('checkout.session.completed', session))
    assert ledger.accounts['acc_1'].available == 100


def test_checkout_in_an_unsold_mode_is_ignored(fx):
    stripe, _, _ = fx
    session = {**checkout_session('acc_1'), 'mode': 'setup'}
    assert stripe.apply(stripe_event('checkout.session.completed', session)).status == 'ignored'


def test_subscription_checkout_turns_the_plan_on_and_grants_nothing(fx):
    stripe, _, ledger = fx
    session = checkout_session('acc_1', plan_id='pro', subscription='sub_1', customer='cus_1')
    stripe.apply(stripe_event('checkout.session.completed', session))
    assert ledger.accounts['acc_1'].plan == 'pro' and ledger.booked == {}


@pytest.mark.parametrize('legacy', [False, True])
def test_invoice_shapes_before_and_after_basil(fx, stripe_api, legacy):
    stripe, _, ledger = fx
    paid = invoice(
        'acc_1', subscription='sub_9', invoice_id='in_9', payment_intent='pi_9', legacy=legacy, expanded=not legacy
    )
    assert invoice_payment_intent(paid) == 'pi_9'
    stripe.apply(stripe_event('invoice.paid', paid))
    assert ledger.booked == {'stripe:invoice:in_9': ('acc_1', 'grant', 1000)}
    assert stripe_api.asked == []  # the invoice said how it was paid


def test_a_webhook_invoice_is_keyed_by_the_payment_intent_stripe_names(fx, stripe_api):
    # Given an invoice as webhooks carry it: no `payments` (includable), no `payment_intent` (gone since basil)
    stripe, _, ledger = fx
    paid = invoice('acc_1', subscription='sub_w', invoice_id='in_w')
    assert 'payments' not in paid and 'payment_intent' not in paid
    stripe_api.paid['in_w'] = 'pi_w'
    # When it is applied, then a refund of its PaymentIntent
    stripe.apply(stripe_event('invoice.paid', paid))
    stripe.apply(stripe_event('charge.refunded', charge(payment_intent='pi_w', amount=999, amount_refunded=999)))
    # Then Stripe was asked, and the refund found the period's grant
    assert stripe_api.asked == ['in_w']
    assert ledger.accounts['acc_1'].available == 0


def test_an_invoice_whose_payment_cannot_be_read_applies_nothing(fx, stripe_api):
    stripe, _, ledger = fx
    stripe_api.down = True
    with pytest.raises(PaymentsUnavailable):
        stripe.apply(stripe_event('invoice.paid', invoice('acc_1', subscription='sub_d', invoice_id='in_d')))
    assert ledger.booked == {} and ledger.accounts['acc_1'].plan == 'free'


def test_a_zero_invoice_is_not_looked_up_and_a_paid_one_without_a_payment_intent_keys_by_invoice(fx, stripe_api):
    stripe, _, ledger = fx
    stripe.apply(stripe_event('invoice.paid', invoice('acc_1', subscription='sub_z', amount_paid=0)))
    assert stripe_api.asked == [] and ledger.accounts['acc_1'].plan == 'pro'
    # an invoice paid out of band: Stripe lists no PaymentIntent, the grant is keyed by the invoice
    stripe.apply(stripe_event('invoice.paid', invoice('acc_1', subscription='sub_o', invoice_id='in_o')))
    assert stripe_api.asked == ['in_o'] and ledger.booked == {'stripe:invoice:in_o': ('acc_1', 'grant', 1000)}


def test_without_a_way_to_ask_stripe_a_webhook_invoice_fails_whole():
    book, ledger, _ = make_book()
    ledger.open('acc_1')
    with pytest.raises(PaymentsUnavailable):
        StripeEvents(book, live=False).apply(stripe_event('invoice.paid', invoice('acc_1', subscription='sub_n')))
    assert ledger.booked == {}


def test_an_invoice_for_a_period_already_over_grants_nothing(fx):
    stripe, _, ledger = fx
    past = invoice(
        'acc_1',
        subscription='sub_old',
        period_start=int(time.time()) - 90 * 86400,
        period_end=int(time.time()) - 60 * 86400,
    )
    outcome = stripe.apply(stripe_event('invoice.paid', past))
    assert outcome.status == 'processed' and ledger.booked == {}


def test_a_one_off_invoice_is_ignored(fx):
    stripe, _, _ = fx
    one_off = invoice('acc_1', subscription='sub_x')
    one_off.pop('parent')
    assert stripe.apply(stripe_event('invoice.paid', one_off)).status == 'ignored'


def test_subscription_statuses_and_the_plan(fx):
    stripe, _, ledger = fx
    for status, plan in [('trialing', 'pro'), ('past_due', 'pro'), ('unpaid', 'free'), ('active', 'pro')]:
        sub = subscription_object('acc_1', subscription_id='sub_s', status=status, price=PRO_PRICE)
        stripe.apply(stripe_event('customer.subscription.updated', sub))
        assert ledger.accounts['acc_1'].plan == plan, status


def test_a_subscription_on_an_unknown_price_is_parked(fx):
    stripe, _, _ = fx
    sub = subscription_object('acc_1', subscription_id='sub_u', price='price_nope')
    assert stripe.apply(stripe_event('customer.subscription.updated', sub)).status == 'parked'


def test_live_price_ids_are_not_test_price_ids():
    book, ledger, _ = make_book()
    ledger.open('acc_1')
    live = StripeEvents(book, live=True)
    sub = subscription_object('acc_1', subscription_id='sub_l', price=PRO_PRICE)
    assert live.apply(stripe_event('customer.subscription.updated', sub, livemode=True)).status == 'parked'


@pytest.mark.parametrize(
    ('event_type', 'status', 'expected'),
    [
        ('charge.dispute.created', 'needs_response', 'open'),
        ('charge.dispute.funds_withdrawn', 'needs_response', 'open'),
        ('charge.dispute.funds_reinstated', 'won', 'won'),
        ('charge.dispute.closed', 'won', 'won'),
        ('charge.dispute.closed', 'warning_closed', 'won'),
        ('charge.dispute.closed', 'lost', 'lost'),
        ('charge.dispute.closed', 'under_review', None),
    ],
)
def test_dispute_status_mapping(event_type, status, expected):
    assert _dispute_status(event_type, status) == expected


def test_refund_and_dispute_key_on_the_payment_intent(fx):
    stripe, _, ledger = fx
    stripe.apply(
        stripe_event('checkout.session.completed', checkout_session('acc_1', payment_intent='pi_k', amount_total=499))
    )
    stripe.apply(stripe_event('charge.refunded', charge(payment_intent='pi_k', amount=499, amount_refunded=250)))
    assert ledger.accounts['acc_1'].available == 50
    stripe.apply(
        stripe_event(
            'charge.dispute.created',
            dispute(payment_intent='pi_k', amount=249, status='needs_response', dispute_id='dp_k'),
        )
    )
    assert ledger.accounts['acc_1'].available == 0


def test_live_and_test_modes_are_kept_apart():
    book, ledger, _ = make_book()
    ledger.open('acc_1')
    with pytest.raises(ModeMismatch):
        StripeEvents(book, live=False).apply(
            stripe_event('checkout.session.completed', checkout_session('acc_1'), livemode=True)
        )
    live = StripeEvents(book, live=True).apply(stripe_event('checkout.session.completed', checkout_session('acc_1')))
    assert live.status == 'ignored'
    assert ledger.booked == {}


# ---------------------------------------------------------------- RevenueCat


def test_rc_products_map_through_the_catalog(fx):
    _, rc, ledger = fx
    rc.apply(rc_purchase('NON_RENEWING_PURCHASE', 'acc_1', 'credits_100', 'txn_1'))
    rc.apply(
        rc_purchase('INITIAL_PURCHASE', 'acc_1', 'pro_monthly:monthly-base', 'txn_2')
    )  # Play: subscription:base plan
    assert ledger.booked == {'rc:txn:txn_1': ('acc_1', 'grant', 100), 'rc:txn:txn_2': ('acc_1', 'grant', 1000)}
    assert ledger.accounts['acc_1'].plan == 'pro'


def test_rc_purchase_without_a_transaction_is_parked(fx):
    _, rc, _ = fx
    body = rc_purchase('NON_RENEWING_PURCHASE', 'acc_1', 'credits_100', 'txn_1')
    body['event'].pop('transaction_id')
    assert rc.apply(body).status == 'parked'


@pytest.mark.parametrize('event_type', ['BILLING_ISSUE', 'UNCANCELLATION', 'PRODUCT_CHANGE'])
def test_rc_events_that_book_nothing(fx, event_type):
    _, rc, ledger = fx
    outcome = rc.apply(rc_event(event_type, 'acc_1', product_id='pro_monthly', transaction_id='t'))
    assert outcome.status == 'processed' and ledger.booked == {}


def test_rc_refund_reversal_delivered_before_its_refund_leaves_the_credits(fx):
    _, rc, ledger = fx
    rc.apply(rc_purchase('NON_RENEWING_PURCHASE', 'acc_1', 'credits_100', 'txn_r'))
    refund = rc_event(
        'CANCELLATION', 'acc_1', cancel_reason='CUSTOMER_SUPPORT', transaction_id='txn_r', product_id='credits_100'
    )
    reversal = rc_event('REFUND_REVERSED', 'acc_1', transaction_id='txn_r', product_id='credits_100')
    rc.apply(reversal)
    rc.apply(refund)
    assert ledger.accounts['acc_1'].available == 100


def test_rc_refund_after_a_reversal_takes_back_again_under_its_own_business_id(fx):
    _, rc, ledger = fx
    rc.apply(rc_purchase('NON_RENEWING_PURCHASE', 'acc_1', 'credits_100', 'txn_r'))
    reports = [
        rc_event('CANCELLATION', 'acc_1', cancel_reason='CUSTOMER_SUPPORT', transaction_id='txn_r'),
        rc_event('REFUND_REVERSED', 'acc_1', transaction_id='txn_r'),
        rc_event('CANCELLATION', 'acc_1', cancel_reason='CUSTOMER_SUPPORT', transaction_id='txn_r'),
    ]
    seen = []
    for report in [*reports, *reports]:  # each delivered twice
        rc.apply(report)
        seen.append(ledger.accounts['acc_1'].available)
    assert seen == [0, 100, 0, 0, 0, 0]
    claws = [bid for bid, (_, op, _) in ledger.booked.items() if op == 'claw_back']
    assert len(claws) == 2 and len(set(claws)) == 2


def test_rc_transfer_to_nobody_known_is_parked(fx):
    _, rc, _ = fx
    assert (
        rc.apply(rc_event('TRANSFER', None, transferred_from=['acc_1'], transferred_to=['acc_new'])).status == 'parked'
    )


def test_a_renewal_retried_after_its_period_books_nothing_and_its_refund_takes_nothing():
    # Given an account with a 100-credit pack, and a clock we move
    now = [datetime.now(UTC)]
    book, ledger, _ = make_book()
    ledger.clock = book._clock = lambda: now[0]  # type: ignore[method-assign]
    ledger.open('acc_1')
    rc = RevenueCatEvents(book, live=False)
    rc.apply(rc_purchase('NON_RENEWING_PURCHASE', 'acc_1', 'credits_100', 'txn_pack'))
    # And a renewal whose first delivery records its facts, then fails at the ledger
    renewal = rc_purchase(
        'RENEWAL', 'acc_1', 'pro_monthly', 'txn_ren', expiration_at_ms=int((now[0].timestamp() + 60) * 1000)
    )
    grant = ledger.grant
    ledger.grant = lambda *a, **k: (_ for _ in ()).throw(LedgerUnavailable('down'))  # type: ignore[method-assign]
    with pytest.raises(LedgerUnavailable):
        rc.apply(renewal)
    ledger.grant = grant  # type: ignore[method-assign]
    # When the retry comes after the period ended, and then the store refunds the renewal
    now[0] += timedelta(minutes=5)
    rc.apply(renewal)
    rc.apply(rc_event('CANCELLATION', 'acc_1', cancel_reason='CUSTOMER_SUPPORT', transaction_id='txn_ren'))
    # Then the renewal booked nothing and its refund took nothing: the pack is untouched
    assert ledger.accounts['acc_1'].available == 100
    assert [op for _, op, _ in ledger.booked.values()] == ['grant']
