"""BackfillPaymentsFunction through its real handler, on moto, against the fake Stripe and RevenueCat APIs.

Whatever the webhooks did not bring, the backfill brings through the same inbox and business ids, so:
lost webhooks + backfill = delivered webhooks; a second backfill changes nothing; a backfill after the
webhooks arrived changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from atelier.payments.models import BackfillRequest
from infra.local.fake_revenuecat import LOCAL_API_KEY, FakeRevenueCatServer
from infra.local.fake_stripe import FakeStripeServer
from tests.integration.payments.conftest import World, set_setting
from tests.support_payments import (
    DAY,
    charge,
    checkout_session,
    invoice,
    invoice_intent,
    rc_event,
    rc_purchase,
    stripe_event,
)

EVENTS = Path(__file__).resolve().parents[2] / 'events' / 'payments'
DAY_MS = DAY * 1000


@pytest.fixture(scope='module')
def fakes() -> Iterator[tuple[FakeStripeServer, FakeRevenueCatServer]]:
    with FakeStripeServer() as stripe_fake, FakeRevenueCatServer(api_key=LOCAL_API_KEY) as rc_fake:
        yield stripe_fake, rc_fake


@pytest.fixture
def stripe_api(world: World, fakes, monkeypatch: pytest.MonkeyPatch) -> FakeStripeServer:
    fake = fakes[0]
    fake.events.clear()
    fake.requests.clear()
    fake.page_size = None
    fake.unavailable.clear()
    set_setting(monkeypatch, 'STRIPE_API_BASE', fake.base_url)
    world.stripe_api = fake
    return fake


@pytest.fixture
def revenuecat_api(world: World, fakes, monkeypatch: pytest.MonkeyPatch) -> FakeRevenueCatServer:
    fake = fakes[1]
    fake.requests.clear()
    set_setting(monkeypatch, 'REVENUECAT_API_BASE', fake.base_url)
    return fake


def ledger_view(world: World, account: str, tag: str) -> tuple[int, str, list[tuple[str, int, str]]]:
    """What the user sees: balance, plan, and the entries (their ids with the scenario's tag made neutral)."""
    entries = sorted((str(e.kind), e.amount, e.id.replace(tag, 'T')) for e in world.entries(account))
    return world.balance(account), world.plan(account), entries


# ---------------------------------------------------------------- Stripe


def stripe_history(account: str, tag: str) -> list[dict[str, Any]]:
    """A pack bought then refunded in part, and a pro subscription started and paid: Stripe's events for them."""
    pi, sub, cus = f'pi_{tag}', f'sub_{tag}', f'cus_{tag}'
    pack = checkout_session(
        account, pack_id='pack_500', session_id=f'cs_test_{tag}', payment_intent=pi, amount_total=1999
    )
    plan = checkout_session(account, plan_id='pro', subscription=sub, customer=cus, session_id=f'cs_test_s{tag}')
    paid = invoice(account, subscription=sub, invoice_id=f'in_i{tag}', customer=cus)  # paid by pi_i{tag}
    refund = charge(payment_intent=pi, amount=1999, amount_refunded=500, charge_id=f'ch_{tag}')
    return [
        stripe_event('checkout.session.completed', pack, event_id=f'evt_{tag}_1'),
        stripe_event('checkout.session.completed', plan, event_id=f'evt_{tag}_2'),
        stripe_event('invoice.paid', paid, event_id=f'evt_{tag}_3'),
        stripe_event('charge.refunded', refund, event_id=f'evt_{tag}_4'),
        stripe_event('customer.created', {'id': cus, 'object': 'customer'}, event_id=f'evt_{tag}_5'),
    ]


def test_lost_stripe_webhooks_backfilled_give_the_ledger_of_delivered_ones(world: World, stripe_api: FakeStripeServer):
    # Given the same purchases by three accounts: every webhook delivered / every one lost / some lost
    delivered, lost, some = world.account(), world.account(), world.account()
    for event in stripe_history(delivered, 'dd'):
        assert world.stripe(event).status == 200
        stripe_api.add_event(event, delivered=True)
    for event in stripe_history(lost, 'll'):
        stripe_api.add_event(event, delivered=False)
    for i, event in enumerate(stripe_history(some, 'ss')):
        if i % 2 == 0:
            assert world.stripe(event).status == 200
        stripe_api.add_event(event, delivered=i % 2 == 0)
    # When the backfill applies the undelivered events (the daily run)
    result = world.backfill({'stripe': {}})
    # Then the lost events were stored and applied, and the ledgers are those of delivered webhooks
    assert result['stripe']['processed'] == 4 + 2 and result['stripe']['failed'] == 0
    assert result['stripe']['more'] is False
    expected = ledger_view(world, delivered, 'dd')
    assert expected[0] == 500 - 125 + 1000 and expected[1] == 'pro'  # 500 of 19.99 refunded: 125 back
    assert ledger_view(world, lost, 'll') == expected
    assert ledger_view(world, some, 'ss') == expected
    assert world.stored('stripe', 'evt_ll_3').status == 'processed'
    # And only the event types that matter were asked for (not customer.created)
    [request] = [r for r in stripe_api.requests if r['path'] == '/v1/events']
    assert request['params']['delivery_success'] == 'false'
    assert 'customer.created' not in request['params']['types'] and 'invoice.paid' in request['params']['types']


def test_a_backfilled_invoice_finds_its_payment_like_the_webhook_and_waits_while_stripe_cannot_tell(
    world: World, stripe_api: FakeStripeServer
):
    # Given a lost invoice.paid (the Events API renders it like the webhook: no `payments`) and the invoice
    # payments API down
    account = world.account()
    paid = invoice(account, subscription='sub_bf', invoice_id='in_bfq', customer='cus_bf')
    event = stripe_api.add_event(stripe_event('invoice.paid', paid, event_id='evt_bfq'), delivered=False)
    stripe_api.unavailable.add('/v1/invoice_payments')
    # When the backfill runs, then the event is kept failed and nothing is applied
    first = world.backfill({'stripe': {}})
    assert (first['stripe']['failed'], world.balance(account), world.plan(account)) == (1, 0, 'free')
    assert world.stored('stripe', event['id']).status == 'failed'
    # When it runs again with Stripe back, then the period is granted under its PaymentIntent: a refund finds it
    stripe_api.unavailable.clear()
    again = world.backfill({'stripe': {}})
    assert (again['stripe']['processed'], world.balance(account)) == (1, 1000)
    refund = charge(payment_intent=invoice_intent('in_bfq'), amount=999, amount_refunded=999)
    world.stripe(stripe_event('charge.refunded', refund))
    assert world.balance(account) == 0


def test_a_second_backfill_and_a_backfill_after_delivery_change_nothing(world: World, stripe_api: FakeStripeServer):
    lost, delivered = world.account(), world.account()
    for event in stripe_history(lost, 'l2'):
        stripe_api.add_event(event, delivered=False)
    for event in stripe_history(delivered, 'd2'):
        world.stripe(event)
        stripe_api.add_event(event, delivered=True)
    first = world.backfill({'stripe': {}})
    before = ledger_view(world, lost, 'l2'), ledger_view(world, delivered, 'd2')
    # When the backfill runs again, and once over every event (delivered ones too)
    again = world.backfill({'stripe': {}})
    everything = world.backfill({'stripe': {'undelivered_only': False, 'since': int(time.time()) - DAY}})
    # Then nothing changes: every event is a duplicate of a settled one
    assert first['stripe']['processed'] == 4
    assert (again['stripe']['duplicate'], again['stripe']['processed']) == (4, 0)
    assert (everything['stripe']['duplicate'], everything['stripe']['processed']) == (8, 0)
    assert (ledger_view(world, lost, 'l2'), ledger_view(world, delivered, 'd2')) == before


def test_since_pagination_and_resuming_after_max_events(world: World, stripe_api: FakeStripeServer):
    # Given 5 lost pack purchases, one of them older than the window asked for
    account = world.account()
    now = int(time.time())
    for i in range(5):
        session = checkout_session(account, session_id=f'cs_test_p{i}', payment_intent=f'pi_p{i}')
        created = now - 3 * DAY if i == 0 else now - 100 + i
        stripe_api.add_event(stripe_event('checkout.session.completed', session, event_id=f'evt_p{i}', created=created))
    stripe_api.page_size = 2
    # When the backfill takes at most 3 events, then resumes where it stopped
    first = world.backfill({'stripe': {'since': now - DAY, 'max_events': 3}})
    rest = world.backfill({'stripe': {'since': now - DAY, 'starting_after': first['stripe']['resume_after']}})
    # Then the 4 recent ones are granted once each, newest first, and the old one is left alone
    assert (first['stripe']['processed'], first['stripe']['more'], first['stripe']['resume_after']) == (
        3,
        True,
        'evt_p2',
    )
    assert (rest['stripe']['processed'], rest['stripe']['more']) == (1, False)
    assert world.balance(account) == 400
    assert world.stored('stripe', 'evt_p0') is None


def test_when_the_events_api_refuses_nothing_changes_and_ops_are_told(
    world: World, stripe_api: FakeStripeServer, monkeypatch: pytest.MonkeyPatch
):
    account = world.account()
    stripe_api.add_event(stripe_event('checkout.session.completed', checkout_session(account)))
    stripe_api.api_key = 'sk_test_another_key'
    try:
        result = world.backfill({'stripe': {}})
    finally:
        stripe_api.api_key = None
    assert result['stripe']['more'] is True and result['stripe']['events'] == 0
    assert 'Events API' in result['stripe']['errors'][0]
    assert world.balance(account) == 0


def test_the_daily_schedule_event_runs_the_stripe_backfill(world: World, stripe_api: FakeStripeServer):
    account = world.account()
    stripe_api.add_event(stripe_event('checkout.session.completed', checkout_session(account)))
    scheduled = {
        'version': '0',
        'id': 'b6c7f8a9-1111-2222-3333-444455556666',
        'detail-type': 'Scheduled Event',
        'source': 'aws.events',
        'time': '2026-01-01T00:00:00Z',
        'resources': ['arn:aws:events:us-east-1:123456789012:rule/daily'],
        'detail': {},
    }
    result = world.backfill(scheduled)
    assert result['stripe']['processed'] == 1 and result['revenuecat'] is None
    assert world.balance(account) == 100


# ---------------------------------------------------------------- RevenueCat


def iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def rc_history(account: str, tag: str, now_ms: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A credit pack and a pro subscription bought in the app: RevenueCat's webhooks, and its subscriber object."""
    bought, expires = now_ms - DAY_MS, now_ms + 29 * DAY_MS
    sent = {'purchased_at_ms': bought, 'event_timestamp_ms': bought + 5000}
    webhooks = [
        rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', f'txn_{tag}_pack', **sent),
        rc_purchase(
            'INITIAL_PURCHASE',
            account,
            'pro_monthly',
            f'txn_{tag}_sub',
            original_transaction_id=f'txn_{tag}_sub',
            expiration_at_ms=expires,
            **sent,
        ),
    ]
    subscriber = {
        'original_app_user_id': account,
        'non_subscriptions': {
            'credits_100': [
                {
                    'id': f'rc{tag}',
                    'store_transaction_id': f'txn_{tag}_pack',
                    'purchase_date': iso(bought),
                    'is_sandbox': True,
                    'store': 'app_store',
                }
            ]
        },
        'subscriptions': {
            'pro_monthly': {
                'store_transaction_id': f'txn_{tag}_sub',
                'purchase_date': iso(bought),
                'original_purchase_date': iso(bought),
                'expires_date': iso(expires),
                'period_type': 'normal',
                'is_sandbox': True,
                'store': 'app_store',
                'refunded_at': None,
                'grace_period_expires_date': None,
                'unsubscribe_detected_at': None,
                'billing_issues_detected_at': None,
                'ownership_type': 'PURCHASED',
            }
        },
    }
    return webhooks, subscriber


def test_lost_revenuecat_webhooks_reconciled_give_the_ledger_of_delivered_ones(
    world: World, revenuecat_api: FakeRevenueCatServer
):
    now_ms = int(time.time() * 1000)
    delivered, lost = world.account(), world.account()
    webhooks, _ = rc_history(delivered, 'dd', now_ms)
    for body in webhooks:
        assert world.rc(body).status == 200
    _, subscriber = rc_history(lost, 'll', now_ms)
    revenuecat_api.set_subscriber(lost, subscriber)
    # When the subscriber is reconciled, twice
    first = world.backfill({'revenuecat': {'app_user_ids': [lost]}})
    view = ledger_view(world, lost, 'll')
    second = world.backfill({'revenuecat': {'app_user_ids': [lost]}})
    # Then it has what delivered webhooks gave, once
    assert view == ledger_view(world, delivered, 'dd') == ledger_view(world, lost, 'll')
    assert view[:2] == (1100, 'pro')
    assert (first['revenuecat']['subscribers'], first['revenuecat']['processed']) == (1, 2)
    assert (second['revenuecat']['duplicate'], second['revenuecat']['processed']) == (2, 0)
    assert world.stored('revenuecat', 'rcsync:purchase:txn_ll_pack').status == 'processed'
    # And the sandbox view was asked for with the secret key (a test stage)
    request = revenuecat_api.requests[-1]
    assert request['headers']['Authorization'] == f'Bearer {LOCAL_API_KEY}'
    assert request['headers']['X-Is-Sandbox'] == 'true'


def test_a_reconciliation_after_the_webhooks_arrived_changes_nothing(
    world: World, revenuecat_api: FakeRevenueCatServer
):
    now_ms = int(time.time() * 1000)
    account = world.account()
    webhooks, subscriber = rc_history(account, 'xx', now_ms)
    for body in webhooks:
        world.rc(body)
    before = ledger_view(world, account, 'xx')
    state_before = world.table().load_state(f'PLAN#{account}')[0]['subscriptions']
    revenuecat_api.set_subscriber(account, subscriber)
    result = world.backfill({'revenuecat': {'app_user_ids': [account]}})
    assert result['revenuecat']['failed'] == 0
    assert ledger_view(world, account, 'xx') == before
    # the subscription stays one subscription, under the store's key (the reconciled report is older)
    assert list(world.table().load_state(f'PLAN#{account}')[0]['subscriptions']) == list(state_before)


def test_a_refund_and_an_expiry_seen_only_by_reconciliation_are_applied_once(
    world: World, revenuecat_api: FakeRevenueCatServer
):
    # Given a pack and a subscription granted by webhooks, whose refund and expiry webhooks were lost
    now_ms = int(time.time() * 1000)
    account = world.account()
    webhooks, subscriber = rc_history(account, 'rf', now_ms)
    for body in webhooks:
        world.rc(body)
    assert world.balance(account) == 1100
    subscriber['non_subscriptions']['credits_100'][0]['refunded_at'] = iso(now_ms - 60_000)
    subscriber['subscriptions']['pro_monthly']['expires_date'] = iso(now_ms - 1000)
    revenuecat_api.set_subscriber(account, subscriber)
    # When the account is reconciled, and once more
    world.backfill({'revenuecat': {'app_user_ids': [account]}})
    world.backfill({'revenuecat': {'app_user_ids': [account]}})
    # Then the pack is taken back once, the plan is off, the period's credits stay
    assert (world.balance(account), world.plan(account)) == (1000, 'free')
    assert [b for b in world.business_ids(account) if b.startswith('rc:refund:txn_rf_pack:')], 'one claw-back'
    # And the webhook of the same refund, arriving late, changes nothing
    late = rc_event(
        'CANCELLATION',
        account,
        cancel_reason='CUSTOMER_SUPPORT',
        transaction_id='txn_rf_pack',
        product_id='credits_100',
        price=-4.99,
    )
    assert world.rc(late).status == 200
    assert world.balance(account) == 1000


def test_a_provisional_subscription_is_adopted_by_the_next_store_webhook(
    world: World, revenuecat_api: FakeRevenueCatServer
):
    # Given a renewal known only from RevenueCat (every webhook of that subscription lost)
    now_ms = int(time.time() * 1000)
    account = world.account()
    _, subscriber = rc_history(account, 'pv', now_ms)
    renewal = subscriber['subscriptions']['pro_monthly']
    renewal['original_purchase_date'] = iso(now_ms - 40 * DAY_MS)
    subscriber['non_subscriptions'] = {}
    revenuecat_api.set_subscriber(account, subscriber)
    world.backfill({'revenuecat': {'app_user_ids': [account]}})
    assert (world.balance(account), world.plan(account)) == (1000, 'pro')
    # And the next renewal, also seen only by a reconciliation (the same subscription, a new period)
    renewal.update(
        store_transaction_id='txn_pv_sub2',
        purchase_date=iso(now_ms - 1000),
        expires_date=iso(now_ms + 60 * DAY_MS),
    )
    revenuecat_api.set_subscriber(account, subscriber)
    world.backfill({'revenuecat': {'app_user_ids': [account]}})
    assert world.balance(account) == 2000
    assert list(world.table().load_state(f'PLAN#{account}')[0]['subscriptions']) == ['rc:txn_pv_sub']
    # When the store's expiration webhook arrives, keyed by the original transaction
    world.rc(
        rc_event(
            'EXPIRATION',
            account,
            product_id='pro_monthly',
            transaction_id='txn_pv_sub2',
            original_transaction_id='otx_pv',
            expiration_reason='UNSUBSCRIBE',
        )
    )
    # Then it ends that subscription (not a second one): the plan is off, the credits stay
    assert (world.balance(account), world.plan(account)) == (2000, 'free')
    assert list(world.table().load_state(f'PLAN#{account}')[0]['subscriptions']) == ['rc:otx_pv']


def test_unreachable_subscribers_and_unmatched_purchases_change_nothing(
    world: World, revenuecat_api: FakeRevenueCatServer
):
    down, refused, unmatched = world.account(), world.account(), world.account()
    revenuecat_api.fail(down, status=503, times=None)
    revenuecat_api.fail(refused, status=404, times=1)
    revenuecat_api.set_subscriber(
        unmatched,
        {'non_subscriptions': {'credits_100': [{'id': 'rc1', 'purchase_date': iso(0), 'is_sandbox': True}]}},
    )
    result = world.backfill({'revenuecat': {'app_user_ids': [down, refused, unmatched]}})['revenuecat']
    assert (result['subscribers'], result['subscribers_failed'], result['unmatched']) == (1, 2, 1)
    assert result['events'] == 0 and len(result['errors']) == 3
    assert [world.balance(a) for a in (down, refused, unmatched)] == [0, 0, 0]


def test_both_providers_in_one_run(world: World, stripe_api: FakeStripeServer, revenuecat_api: FakeRevenueCatServer):
    account = world.account()
    stripe_api.add_event(stripe_event('checkout.session.completed', checkout_session(account)))
    _, subscriber = rc_history(account, 'bo', int(time.time() * 1000))
    revenuecat_api.set_subscriber(account, subscriber)
    result = world.backfill({'stripe': {}, 'revenuecat': {'app_user_ids': [account]}})
    assert (result['stripe']['processed'], result['revenuecat']['processed']) == (1, 2)
    assert world.balance(account) == 100 + 1100


@pytest.mark.parametrize('path', sorted(EVENTS.glob('backfill_*.json')), ids=lambda p: p.name)
def test_the_documented_test_events_are_valid_requests(path: Path):
    BackfillRequest.from_event(json.loads(path.read_text()))
