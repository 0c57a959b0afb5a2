"""Delivery order and repetition do not matter: every event of a scenario delivered three times, shuffled,
leaves the same balances and plan as one delivery in order."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.payments.conftest import World
from tests.support_payments import (
    DAY,
    charge,
    checkout_session,
    dispute,
    invoice,
    rc_event,
    rc_purchase,
    stripe_event,
    subscription_object,
)

Delivery = tuple[str, dict[str, Any]]  # ('stripe' | 'rc', body)
Scenario = Callable[[str], list[Delivery]]


def stripe_packs(account: str) -> list[Delivery]:
    """A delayed-payment pack_500 partly refunded twice; a pack_100 disputed and won."""
    pi, pi2 = f'pi_{account}', f'pi2_{account}'
    unpaid = checkout_session(
        account, pack_id='pack_500', payment_intent=pi, amount_total=2000, payment_status='unpaid'
    )
    small = checkout_session(account, pack_id='pack_100', payment_intent=pi2, amount_total=500)
    events = [
        stripe_event('checkout.session.completed', unpaid),
        stripe_event('checkout.session.async_payment_succeeded', {**unpaid, 'payment_status': 'paid'}),
        stripe_event(
            'charge.refunded', charge(payment_intent=pi, amount=2000, amount_refunded=500, charge_id=f'ch_{account}')
        ),
        stripe_event(
            'charge.refunded', charge(payment_intent=pi, amount=2000, amount_refunded=1200, charge_id=f'ch_{account}')
        ),
        stripe_event('checkout.session.completed', small),
        stripe_event(
            'charge.dispute.created',
            dispute(payment_intent=pi2, amount=500, status='needs_response', dispute_id=f'dp_{account}'),
        ),
        stripe_event(
            'charge.dispute.closed', dispute(payment_intent=pi2, amount=500, status='won', dispute_id=f'dp_{account}')
        ),
    ]
    return [('stripe', e) for e in events]


def stripe_subscription(account: str) -> list[Delivery]:
    """Checkout, two paid periods, a past-due blip, cancellation, and the second period refunded."""
    sub, t = f'sub_{account}', int(time.time())
    start = t - 40 * DAY
    session = checkout_session(account, plan_id='pro', subscription=sub, customer=f'cus_{account}')
    second_pi = f'pi_{account}_2'
    events = [
        stripe_event('checkout.session.completed', session, created=t - 40 * DAY),
        stripe_event(
            'customer.subscription.created', subscription_object(account, subscription_id=sub), created=t - 40 * DAY
        ),
        stripe_event(
            'invoice.paid',
            invoice(
                account, subscription=sub, period_start=start, period_end=t + 5 * DAY, invoice_id=f'in_{account}_1'
            ),
            created=t - 40 * DAY,
        ),
        stripe_event(
            'invoice.paid',
            invoice(
                account,
                subscription=sub,
                billing_reason='subscription_cycle',
                period_start=t + 5 * DAY,
                period_end=t + 35 * DAY,
                invoice_id=f'in_{account}_2',
                payment_intent=second_pi,
            ),
            created=t - 2,
        ),
        stripe_event(
            'customer.subscription.updated',
            subscription_object(account, subscription_id=sub, status='past_due'),
            created=t - 20,
        ),
        stripe_event(
            'customer.subscription.deleted',
            subscription_object(account, subscription_id=sub, status='canceled'),
            created=t,
        ),
        stripe_event('charge.refunded', charge(payment_intent=second_pi, amount=999, amount_refunded=999), created=t),
    ]
    return [('stripe', e) for e in events]


def revenuecat(account: str) -> list[Delivery]:
    """A subscription bought and renewed, a pack bought and refunded, then cancelled and expired."""
    now = int(time.time() * 1000)
    common = {'original_transaction_id': f'otx_{account}', 'product_id': 'pro_monthly'}
    events = [
        rc_purchase(
            'INITIAL_PURCHASE',
            account,
            'pro_monthly',
            f'txn1_{account}',
            event_timestamp_ms=now,
            original_transaction_id=f'otx_{account}',
        ),
        rc_purchase(
            'RENEWAL',
            account,
            'pro_monthly',
            f'txn2_{account}',
            event_timestamp_ms=now + 1,
            original_transaction_id=f'otx_{account}',
            expiration_at_ms=now + 60 * DAY * 1000,
        ),
        rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', f'txn3_{account}', event_timestamp_ms=now + 2),
        rc_event(
            'CANCELLATION',
            account,
            cancel_reason='CUSTOMER_SUPPORT',
            transaction_id=f'txn3_{account}',
            product_id='credits_100',
            price=-4.99,
            event_timestamp_ms=now + 3,
        ),
        rc_event(
            'CANCELLATION',
            account,
            cancel_reason='UNSUBSCRIBE',
            transaction_id=f'txn2_{account}',
            event_timestamp_ms=now + 4,
            **common,
        ),
        rc_event('BILLING_ISSUE', account, transaction_id=f'txn2_{account}', event_timestamp_ms=now + 5, **common),
        rc_event('EXPIRATION', account, transaction_id=f'txn2_{account}', event_timestamp_ms=now + 6, **common),
    ]
    return [('rc', e) for e in events]


SCENARIOS: dict[str, tuple[Scenario, int, str]] = {
    # name: (events, expected available, expected plan)
    'stripe_packs': (stripe_packs, 500 - 300 + 100, 'free'),
    'stripe_subscription': (stripe_subscription, 1000 + 1000 - 1000, 'free'),
    'revenuecat': (revenuecat, 1000 + 1000 + 100 - 100, 'free'),
}


def deliver(world: World, deliveries: list[Delivery]) -> None:
    for provider, body in deliveries:
        reply = world.stripe(body) if provider == 'stripe' else world.rc(body)
        assert reply.status == 200, reply


def outcome(world: World, account: str) -> tuple[int, int, int, str, bool]:
    state = world.get(account)
    return state.available, state.held, state.owed, state.plan, world.reconciled(account)


_baselines: dict[tuple[int, str], tuple[int, int, int, str, bool]] = {}


def check(world: World, name: str, shuffle: Callable[[list[Delivery]], None]) -> None:
    scenario, expected_available, expected_plan = SCENARIOS[name]
    # Given the scenario delivered once, in order, to one account (once per world)
    if (id(world), name) not in _baselines:
        in_order = world.account()
        deliver(world, scenario(in_order))
        _baselines[id(world), name] = outcome(world, in_order)
    baseline = _baselines[id(world), name]
    assert baseline == (expected_available, 0, 0, expected_plan, True)
    # When every event of the same scenario is delivered three times, shuffled, to another account
    shuffled = world.account()
    deliveries = scenario(shuffled) * 3
    shuffle(deliveries)
    deliver(world, deliveries)
    # Then the balances and the plan are the same
    assert outcome(world, shuffled) == baseline


@settings(max_examples=9, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(SCENARIOS)), seed=st.randoms(use_true_random=False))
def test_three_shuffled_deliveries_equal_one_in_order(world: World, name: str, seed: random.Random):
    check(world, name, seed.shuffle)


def test_reverse_order_equals_in_order(world: World):
    for name in SCENARIOS:
        check(world, name, lambda deliveries: deliveries.reverse())
