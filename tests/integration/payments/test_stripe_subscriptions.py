"""Stripe subscriptions: a grant per paid period, the plan follows the subscription, old news is ignored."""

from __future__ import annotations

import time

import pytest

from tests.integration.payments.conftest import World
from tests.support_payments import DAY, PRO_PRICE, checkout_session, invoice, stripe_event, subscription_object


def subscribe(world: World, account: str, sub: str) -> dict:
    """The first period of a pro subscription: checkout completed, then its invoice paid."""
    session = checkout_session(account, plan_id='pro', subscription=sub, customer='cus_1')
    world.stripe(stripe_event('checkout.session.completed', session))
    first = invoice(account, subscription=sub, billing_reason='subscription_create')
    world.stripe(stripe_event('invoice.paid', first))
    return first


def test_checkout_plus_the_first_invoice_grant_one_period_and_turn_pro_on(world: World):
    account = world.account()
    subscribe(world, account, 'sub_1')
    assert world.balance(account) == 1000
    assert world.plan(account) == 'pro'
    assert len(world.entries(account)) == 1


def test_create_then_cycle_grant_two_periods_that_expire_at_their_period_ends(world: World):
    from atelier.wiring import ledger

    account = world.account()
    first = subscribe(world, account, 'sub_2')
    start = first['lines']['data'][0]['period']['end']
    world.stripe(
        stripe_event(
            'invoice.paid',
            invoice(
                account,
                subscription='sub_2',
                billing_reason='subscription_cycle',
                period_start=start,
                period_end=start + 30 * DAY,
            ),
        )
    )
    assert world.balance(account) == 2000
    lots = ledger().list_lots(account)
    assert sorted(int(lot.expires_at.timestamp()) for lot in lots) == [start, start + 30 * DAY]
    assert {lot.kind.value for lot in lots} == {'subscription'}


def test_a_zero_dollar_trial_invoice_turns_the_plan_on_without_credits(world: World):
    account = world.account()
    trial = invoice(account, subscription='sub_t', billing_reason='subscription_create', amount_paid=0)
    reply = world.stripe(stripe_event('invoice.paid', trial))
    assert reply.status == 200 and '$0' in reply.body['detail']
    assert world.plan(account) == 'pro' and world.balance(account) == 0
    # When the trial converts, the first paid invoice grants
    world.stripe(
        stripe_event(
            'invoice.paid',
            invoice(account, subscription='sub_t', billing_reason='subscription_cycle', period_start=int(time.time())),
        )
    )
    assert world.balance(account) == 1000


def test_legacy_invoice_shape_is_read_too(world: World):
    account = world.account()
    world.stripe(stripe_event('invoice.paid', invoice(account, subscription='sub_l', legacy=True)))
    assert world.balance(account) == 1000 and world.plan(account) == 'pro'


def test_an_invoice_found_through_the_customer_of_an_earlier_checkout(world: World):
    # Given a subscription invoice without our metadata, for a customer who checked out before
    account = world.account()
    session = checkout_session(account, plan_id='pro', subscription='sub_c', customer='cus_known')
    world.stripe(stripe_event('checkout.session.completed', session))
    world.stripe(stripe_event('invoice.paid', invoice(None, subscription='sub_c', customer='cus_known')))
    assert world.balance(account) == 1000


def test_an_invoice_nobody_can_be_found_for_is_parked(world: World):
    event = stripe_event('invoice.paid', invoice(None, subscription='sub_orphan', customer='cus_nobody'))
    reply = world.stripe(event)
    assert reply.status == 200 and reply.body['status'] == 'parked'


def test_an_invoice_for_an_unknown_price_is_parked(world: World):
    account = world.account()
    reply = world.stripe(stripe_event('invoice.paid', invoice(account, subscription='sub_u', price='price_unknown')))
    assert reply.body['status'] == 'parked' and world.balance(account) == 0


def test_deleting_the_subscription_ends_the_plan_and_keeps_granted_credits(world: World):
    account = world.account()
    subscribe(world, account, 'sub_d')
    world.stripe(
        stripe_event(
            'customer.subscription.deleted', subscription_object(account, subscription_id='sub_d', status='canceled')
        )
    )
    assert world.plan(account) == 'free'
    assert world.balance(account) == 1000


def test_an_older_subscription_update_is_ignored_and_created_after_updated_does_not_regress(world: World):
    # Given the subscription's events created at t, t+10 and t+20
    account = world.account()
    t = int(time.time())
    created = stripe_event(
        'customer.subscription.created',
        subscription_object(account, subscription_id='sub_o', status='incomplete'),
        created=t,
    )
    active = stripe_event(
        'customer.subscription.updated',
        subscription_object(account, subscription_id='sub_o', status='active'),
        created=t + 10,
    )
    past_due = stripe_event(
        'customer.subscription.updated',
        subscription_object(account, subscription_id='sub_o', status='unpaid'),
        created=t + 20,
    )
    # When they arrive newest first
    for event in (past_due, active, created):
        assert world.stripe(event).status == 200
    # Then the newest status holds: unpaid, so no pro plan
    assert world.plan(account) == 'free'
    # And a deletion is final, whatever arrives after it
    world.stripe(
        stripe_event(
            'customer.subscription.deleted',
            subscription_object(account, subscription_id='sub_o', status='canceled'),
            created=t + 30,
        )
    )
    world.stripe(
        stripe_event(
            'customer.subscription.updated',
            subscription_object(account, subscription_id='sub_o', status='active'),
            created=t + 40,
        )
    )
    assert world.plan(account) == 'free'


def test_cancel_at_period_end_keeps_the_plan_until_deleted(world: World):
    account = world.account()
    subscribe(world, account, 'sub_p')
    world.stripe(
        stripe_event(
            'customer.subscription.updated',
            subscription_object(account, subscription_id='sub_p', cancel_at_period_end=True),
        )
    )
    assert world.plan(account) == 'pro'


def test_the_plan_sets_the_concurrency_limit(world: World):
    from atelier.catalog.plans import plan_limits

    account = world.account()
    assert plan_limits(world.plan(account)).max_concurrent_tasks == 2
    subscribe(world, account, 'sub_limits')
    assert plan_limits(world.plan(account)).max_concurrent_tasks == 5


def test_duplicate_and_reordered_subscription_events_give_one_grant(world: World):
    account = world.account()
    session = checkout_session(account, plan_id='pro', subscription='sub_r', customer='cus_r')
    events = [
        stripe_event('invoice.paid', invoice(account, subscription='sub_r', invoice_id='in_r1')),
        stripe_event('checkout.session.completed', session),
        stripe_event('customer.subscription.created', subscription_object(account, subscription_id='sub_r')),
    ]
    for event in events + events[::-1]:
        assert world.stripe(event).status == 200
    assert world.balance(account) == 1000 and world.plan(account) == 'pro'


@pytest.fixture
def two_paid_plans(monkeypatch: pytest.MonkeyPatch):
    """A catalog with a second paid plan above pro (the shipped one sells only pro), to exercise upgrades."""
    import atelier.payments.service
    from atelier.payments.catalog import load_commerce_catalog

    shipped = load_commerce_catalog()
    data = shipped.model_dump(mode='json')
    data['plans'].append(
        {
            'id': 'max',
            'name': 'Max',
            'rank': 2,
            'period_credits': 5000,
            'amount': 2999,
            'currency': 'usd',
            'interval': 'month',
            'stripe_prices': {'test': 'price_atelier_max_monthly', 'live': 'price_live_max'},
        }
    )
    catalog = type(shipped).model_validate(data)
    monkeypatch.setattr(atelier.payments.service, 'load_commerce_catalog', lambda: catalog)
    atelier.payments.service.payments_service.cache_clear()
    return catalog


def test_an_upgrade_mid_period_tops_the_period_up_to_the_new_plan(world: World, two_paid_plans):
    # Given a pro subscriber in the middle of a period
    account = world.account()
    start = int(time.time()) - 10 * DAY
    end = start + 30 * DAY
    world.stripe(
        stripe_event('invoice.paid', invoice(account, subscription='sub_up', period_start=start, period_end=end))
    )
    assert world.balance(account) == 1000
    # When they upgrade to max and pay the proration invoice (old plan credited, new plan charged, same period end)
    lines = [
        {
            'id': 'il_old',
            'amount': -666,
            'period': {'start': start + 10 * DAY, 'end': end},
            'pricing': {'price_details': {'price': PRO_PRICE}},
        },
        {
            'id': 'il_new',
            'amount': 1999,
            'period': {'start': start + 10 * DAY, 'end': end},
            'pricing': {'price_details': {'price': 'price_atelier_max_monthly'}},
        },
    ]
    proration = invoice(
        account, subscription='sub_up', billing_reason='subscription_update', amount_paid=1333, lines=lines
    )
    world.stripe(stripe_event('invoice.paid', proration))
    world.stripe(
        stripe_event(
            'customer.subscription.updated',
            subscription_object(account, subscription_id='sub_up', price='price_atelier_max_monthly'),
        )
    )
    # Then the period is topped up to max's 5000 (not 1000 + 5000), and the plan is max
    assert world.balance(account) == 5000
    assert world.plan(account) == 'max'
    # And a downgrade back to pro within the same period grants nothing more
    downgrade = invoice(
        account,
        subscription='sub_up',
        billing_reason='subscription_update',
        amount_paid=0,
        lines=[
            {
                'id': 'il_down',
                'amount': 0,
                'period': {'start': start + 20 * DAY, 'end': end},
                'pricing': {'price_details': {'price': PRO_PRICE}},
            }
        ],
    )
    world.stripe(stripe_event('invoice.paid', downgrade))
    assert world.balance(account) == 5000
