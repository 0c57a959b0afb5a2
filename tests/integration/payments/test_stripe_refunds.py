"""Refunds and disputes take back credits in proportion to the money, once per business fact."""

from __future__ import annotations

from atelier.wiring import ledger
from tests.integration.payments.conftest import World
from tests.support_payments import charge, checkout_session, dispute, invoice, invoice_intent, stripe_event


def buy_pack_500(world: World, account: str, pi: str) -> None:
    session = checkout_session(account, pack_id='pack_500', payment_intent=pi, amount_total=2000)
    world.stripe(stripe_event('checkout.session.completed', session))


def refunded(pi: str, cumulative: int, charge_id: str = 'ch_1') -> dict:
    return stripe_event(
        'charge.refunded', charge(payment_intent=pi, amount=2000, amount_refunded=cumulative, charge_id=charge_id)
    )


def test_a_full_refund_takes_back_the_whole_pack(world: World):
    account = world.account()
    buy_pack_500(world, account, 'pi_full')
    world.stripe(refunded('pi_full', 2000))
    assert world.balance(account) == 0
    assert world.reconciled(account)


def test_a_partial_refund_takes_back_a_proportional_share(world: World):
    account = world.account()
    buy_pack_500(world, account, 'pi_part')
    world.stripe(refunded('pi_part', 500))  # a quarter of the money
    assert world.balance(account) == 375


def test_two_partial_refunds_claw_back_the_delta_of_the_cumulative_amount(world: World):
    account = world.account()
    buy_pack_500(world, account, 'pi_two')
    first, second = refunded('pi_two', 500), refunded('pi_two', 1200)
    # In order, then redelivered in reverse
    for event in (first, second, second, first):
        world.stripe(event)
    assert world.balance(account) == 200  # 500 - 500 * 1200/2000
    claws = [e for e in world.entries(account) if e.kind.value == 'claw_back']
    assert sorted(-e.amount for e in claws) == [125, 175]


def test_partial_refunds_arriving_newest_first_take_back_the_same_total(world: World):
    account = world.account()
    buy_pack_500(world, account, 'pi_rev')
    world.stripe(refunded('pi_rev', 1200))
    world.stripe(refunded('pi_rev', 500))  # older news: the cumulative amount already covers it
    assert world.balance(account) == 200


def test_a_refund_after_credits_were_spent_pushes_the_balance_below_zero(world: World):
    account = world.account()
    buy_pack_500(world, account, 'pi_spent')
    ledger().hold(account, task_id='t1', amount=400)
    ledger().capture(account, task_id='t1', amount=400)
    world.stripe(refunded('pi_spent', 2000))
    state = world.get(account)
    assert state.available == -400 and state.owed == 400
    assert world.reconciled(account)


def test_a_refund_that_arrives_before_the_purchase_is_applied_when_the_purchase_lands(world: World):
    # Given the refund event first (out of order), then the purchase
    account = world.account()
    reply = world.stripe(refunded('pi_early', 1000))
    assert reply.status == 200 and 'recorded' in reply.body['detail']
    buy_pack_500(world, account, 'pi_early')
    # Then the account ends where in-order delivery would have left it
    assert world.balance(account) == 250


def test_dispute_opened_takes_back_and_won_gives_back_once(world: World):
    account = world.account()
    buy_pack_500(world, account, 'pi_d')
    opened = stripe_event(
        'charge.dispute.created',
        dispute(payment_intent='pi_d', amount=2000, status='needs_response', dispute_id='dp_1'),
    )
    won = stripe_event(
        'charge.dispute.closed', dispute(payment_intent='pi_d', amount=2000, status='won', dispute_id='dp_1')
    )
    world.stripe(opened)
    assert world.balance(account) == 0
    world.stripe(won)
    world.stripe(won)
    world.stripe(opened)
    assert world.balance(account) == 500
    assert world.reconciled(account)


def test_a_lost_dispute_keeps_the_credits_taken(world: World):
    account = world.account()
    buy_pack_500(world, account, 'pi_lost')
    world.stripe(
        stripe_event(
            'charge.dispute.closed', dispute(payment_intent='pi_lost', amount=2000, status='lost', dispute_id='dp_l')
        )
    )
    world.stripe(
        stripe_event(
            'charge.dispute.created',
            dispute(payment_intent='pi_lost', amount=2000, status='needs_response', dispute_id='dp_l'),
        )
    )
    assert world.balance(account) == 0


def test_a_won_dispute_then_a_refund_nets_out(world: World):
    account = world.account()
    buy_pack_500(world, account, 'pi_net')
    world.stripe(
        stripe_event(
            'charge.dispute.created',
            dispute(payment_intent='pi_net', amount=2000, status='needs_response', dispute_id='dp_n'),
        )
    )
    world.stripe(
        stripe_event(
            'charge.dispute.funds_reinstated',
            dispute(payment_intent='pi_net', amount=2000, status='won', dispute_id='dp_n'),
        )
    )
    world.stripe(refunded('pi_net', 1000))
    assert world.balance(account) == 250


def test_a_refund_of_a_subscription_invoice_takes_back_that_period(world: World):
    # Given invoice.paid as Stripe delivers it: no `payments` (an includable property, only present when
    # expanded: https://docs.stripe.com/api/invoices/object#invoice_object-payments) and, since basil, no
    # `payment_intent`; Stripe's GET /v1/invoice_payments names the PaymentIntent that paid it
    account = world.account()
    paid = invoice(account, subscription='sub_refund', amount_paid=999)
    assert 'payments' not in paid and 'payment_intent' not in paid
    assert world.stripe(stripe_event('invoice.paid', paid)).status == 200
    assert world.balance(account) == 1000
    # When the subscription payment is refunded (Stripe's charge names only its PaymentIntent)
    pi = invoice_intent(paid['id'])
    world.stripe(stripe_event('charge.refunded', charge(payment_intent=pi, amount=999, amount_refunded=999)))
    # Then the period's credits are taken back
    assert world.balance(account) == 0
    assert world.reconciled(account)


def test_a_lost_dispute_of_a_subscription_payment_takes_back_that_period(world: World):
    account = world.account()
    paid = invoice(account, subscription='sub_disputed', amount_paid=999)
    world.stripe(stripe_event('invoice.paid', paid))
    pi = invoice_intent(paid['id'])
    world.stripe(
        stripe_event('charge.dispute.closed', dispute(payment_intent=pi, amount=999, status='lost', dispute_id='du_s'))
    )
    assert world.balance(account) == 0


def test_when_stripe_cannot_name_the_invoices_payment_the_webhook_is_503_and_a_retry_grants_once(world: World):
    # Given Stripe's invoice payments API failing
    account = world.account()
    event = stripe_event('invoice.paid', invoice(account, subscription='sub_outage', amount_paid=999))
    world.stripe_api.unavailable.add('/v1/invoice_payments')
    # When the invoice.paid webhook arrives, then nothing is applied (not even the plan) and Stripe is told to retry
    reply = world.stripe(event)
    assert (reply.status, reply.body['error']['code']) == (503, 'payments_unavailable')
    assert (world.balance(account), world.plan(account), world.entries(account)) == (0, 'free', [])
    assert world.stored('stripe', event['id']).status == 'failed'
    # When Stripe's retries come after the API is back
    world.stripe_api.unavailable.clear()
    assert (world.stripe(event).body['status'], world.stripe(event).body['status']) == ('processed', 'duplicate')
    # Then the period is granted once, keyed by its PaymentIntent (a refund of it finds it)
    assert (world.balance(account), world.plan(account)) == (1000, 'pro')
    pi = invoice_intent(event['data']['object']['id'])
    world.stripe(stripe_event('charge.refunded', charge(payment_intent=pi, amount=999, amount_refunded=999)))
    assert world.balance(account) == 0


def test_a_zero_trial_invoice_needs_no_payment_lookup(world: World):
    # Given Stripe's invoice payments API failing, and a $0 trial invoice (no payment at all)
    account = world.account()
    world.stripe_api.unavailable.add('/v1/invoice_payments')
    world.stripe_api.requests.clear()
    trial = invoice(account, subscription='sub_trial', billing_reason='subscription_create', amount_paid=0)
    # When it is delivered, then the subscription starts (a trial grants no credits by the catalog's policy)
    reply = world.stripe(stripe_event('invoice.paid', trial))
    assert (reply.status, reply.body['status']) == (200, 'processed')
    assert (world.plan(account), world.balance(account)) == ('pro', 0)
    assert [r for r in world.stripe_api.requests if r['path'] == '/v1/invoice_payments'] == []


def test_a_refund_for_a_payment_never_seen_is_kept_for_ops(world: World):
    event = refunded('pi_unknown', 2000)
    reply = world.stripe(event)
    assert reply.status == 200
    items = world.ddb.query(
        TableName=world.events_table,
        IndexName='gsi1',
        KeyConditionExpression='gsi1pk = :pk',
        ExpressionAttributeValues={':pk': {'S': 'PAYMENTS#unattributed'}},
    )['Items']
    assert [i['pk']['S'] for i in items] == ['PAYMENT#stripe:pi_unknown']
