"""The RevenueCat reconciliation's pure part: a ``GET /v1/subscribers`` response -> the webhook events it implies;
and the adoption of a provisional subscription key by the first store report of its product."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from atelier.payments.backfill import subscriber_events
from atelier.payments.models import BackfillRequest
from atelier.payments.revenuecat_events import BACKFILL_FIELD, RevenueCatEvents
from atelier.payments.state import AccountPlanState, Subscription
from tests.support_payments import rc_event
from tests.unit.payments.fakes import make_book

NOW_MS = 1_760_000_000_000
DAY_MS = 24 * 3600 * 1000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


def response(**subscriber: object) -> dict:
    return {'request_date_ms': NOW_MS, 'subscriber': {'original_app_user_id': 'acc_1', **subscriber}}


def pack(txn: str | None, **fields: object) -> dict:
    return {
        'id': 'rc_internal_1',
        'is_sandbox': True,
        'purchase_date': iso(NOW_MS - DAY_MS),
        'store': 'app_store',
        **({'store_transaction_id': txn} if txn else {}),
        **fields,
    }


def subscription(txn: str, *, renewal: bool = False, expires_ms: int = NOW_MS + 20 * DAY_MS, **fields: object) -> dict:
    purchased = expires_ms - 30 * DAY_MS
    return {
        'store_transaction_id': txn,
        'purchase_date': iso(purchased),
        'original_purchase_date': iso(purchased - (30 * DAY_MS if renewal else 0)),
        'expires_date': iso(expires_ms),
        'period_type': 'normal',
        'is_sandbox': True,
        'store': 'app_store',
        'refunded_at': None,
        'grace_period_expires_date': None,
        'unsubscribe_detected_at': None,
        **fields,
    }


def events_of(derived) -> list[tuple[str, str]]:
    return [(e['event']['type'], e['event']['id']) for e in derived.events]


def test_a_consumable_purchase_becomes_a_non_renewing_purchase_keyed_by_the_store_transaction():
    derived = subscriber_events(
        'acc_1',
        response(non_subscriptions={'credits_100': [pack('txn_1', price={'amount': 4.99, 'currency': 'USD'})]}),
        now_ms=NOW_MS,
    )
    [envelope] = derived.events
    event = envelope['event']
    assert envelope['api_version'] == '1.0'
    assert (event['type'], event['id'], event['transaction_id']) == (
        'NON_RENEWING_PURCHASE',
        'rcsync:purchase:txn_1',
        'txn_1',
    )
    assert (event['product_id'], event['environment'], event['store'], event['price']) == (
        'credits_100',
        'SANDBOX',
        'APP_STORE',
        4.99,
    )
    assert event['app_user_id'] == 'acc_1' and event[BACKFILL_FIELD]['entry']['id'] == 'rc_internal_1'


def test_a_purchase_without_a_store_transaction_id_is_unmatched_never_granted_under_another_id():
    derived = subscriber_events('acc_1', response(non_subscriptions={'credits_100': [pack(None)]}), now_ms=NOW_MS)
    assert derived.events == []
    assert derived.unmatched == ["credits_100 purchase 'rc_internal_1' has no store_transaction_id"]


def test_a_refunded_purchase_also_gives_a_customer_support_cancellation():
    entry = pack('txn_r', refunded_at=iso(NOW_MS - 3600_000), price={'amount': 4.99, 'currency': 'USD'})
    derived = subscriber_events('acc_1', response(non_subscriptions={'credits_100': [entry]}), now_ms=NOW_MS)
    assert events_of(derived) == [
        ('NON_RENEWING_PURCHASE', 'rcsync:purchase:txn_r'),
        ('CANCELLATION', f'rcsync:refund:txn_r:{NOW_MS - 3600_000}'),
    ]
    refund = derived.events[1]['event']
    assert (refund['cancel_reason'], refund['price'], refund['transaction_id']) == ('CUSTOMER_SUPPORT', -4.99, 'txn_r')


def test_an_active_subscription_gives_its_latest_transaction_with_the_known_original_transaction():
    derived = subscriber_events(
        'acc_1',
        response(subscriptions={'pro_monthly': subscription('txn_2', renewal=True)}),
        known_subscription=lambda product: ('otx_1', False) if product == 'pro_monthly' else None,
        now_ms=NOW_MS,
    )
    [envelope] = derived.events
    event = envelope['event']
    assert (event['type'], event['transaction_id'], event['original_transaction_id']) == ('RENEWAL', 'txn_2', 'otx_1')
    assert event['expiration_at_ms'] == NOW_MS + 20 * DAY_MS
    assert event['period_type'] == 'NORMAL'
    assert event[BACKFILL_FIELD]['provisional_subscription'] is False


def test_without_a_known_original_transaction_the_subscription_is_provisional():
    derived = subscriber_events('acc_1', response(subscriptions={'pro_monthly': subscription('txn_9')}), now_ms=NOW_MS)
    event = derived.events[0]['event']
    assert event['type'] == 'INITIAL_PURCHASE' and event['original_transaction_id'] is None
    assert event[BACKFILL_FIELD]['provisional_subscription'] is True


def test_a_known_provisional_key_is_reused_and_stays_provisional():
    derived = subscriber_events(
        'acc_1',
        response(subscriptions={'pro_monthly': subscription('txn_10', renewal=True)}),
        known_subscription=lambda product: ('txn_9', True),
        now_ms=NOW_MS,
    )
    event = derived.events[0]['event']
    assert event['original_transaction_id'] == 'txn_9'
    assert event[BACKFILL_FIELD]['provisional_subscription'] is True


def test_an_original_transaction_reported_by_revenuecat_wins():
    entry = subscription('txn_3', renewal=True, original_transaction_id='otx_store')
    derived = subscriber_events(
        'acc_1', response(subscriptions={'pro_monthly': entry}), known_subscription=lambda p: ('x', True), now_ms=NOW_MS
    )
    event = derived.events[0]['event']
    assert (event['original_transaction_id'], event[BACKFILL_FIELD]['provisional_subscription']) == ('otx_store', False)


def test_a_lapsed_subscription_also_expires_and_a_refunded_one_is_clawed_back():
    lapsed = subscription('txn_old', expires_ms=NOW_MS - DAY_MS, refunded_at=iso(NOW_MS - 2 * DAY_MS))
    derived = subscriber_events('acc_1', response(subscriptions={'pro_monthly': lapsed}), now_ms=NOW_MS)
    assert events_of(derived) == [
        ('INITIAL_PURCHASE', 'rcsync:purchase:txn_old'),
        ('CANCELLATION', f'rcsync:refund:txn_old:{NOW_MS - 2 * DAY_MS}'),
        ('EXPIRATION', 'rcsync:expiration:txn_old'),
    ]
    assert derived.events[2]['event']['event_timestamp_ms'] == NOW_MS - DAY_MS


def test_a_subscription_in_its_grace_period_does_not_expire_yet():
    in_grace = subscription('txn_g', expires_ms=NOW_MS - DAY_MS, grace_period_expires_date=iso(NOW_MS + DAY_MS))
    derived = subscriber_events('acc_1', response(subscriptions={'pro_monthly': in_grace}), now_ms=NOW_MS)
    assert [t for t, _ in events_of(derived)] == ['INITIAL_PURCHASE']


def test_a_play_base_plan_is_reported_like_the_webhook_does():
    entry = subscription('GPA.1', product_plan_identifier='monthly', is_sandbox=False, store='play_store')
    derived = subscriber_events('acc_1', response(subscriptions={'pro_monthly': entry}), now_ms=NOW_MS)
    event = derived.events[0]['event']
    assert (event['product_id'], event['environment'], event['store']) == (
        'pro_monthly:monthly',
        'PRODUCTION',
        'PLAY_STORE',
    )


def test_the_same_response_always_derives_the_same_events():
    body = response(
        non_subscriptions={'credits_100': [pack('a'), pack('b')]},
        subscriptions={'pro_monthly': subscription('s', expires_ms=NOW_MS - 1)},
    )
    first = subscriber_events('acc_1', body, now_ms=NOW_MS)
    assert first.events == subscriber_events('acc_1', body, now_ms=NOW_MS).events
    assert len({e['event']['id'] for e in first.events}) == len(first.events) == 4


# ---------------------------------------------------------------- provisional subscription keys


def sub(*, product: str = 'pro_monthly', provisional: bool = False, at: int = 1, entitled: bool = True) -> Subscription:
    return Subscription(
        provider='revenuecat',
        plan='pro',
        status='active' if entitled else 'expired',
        entitled=entitled,
        event_at=at,
        product=product,
        provisional=provisional,
    )


def test_a_store_report_adopts_the_provisional_key_of_its_product_with_its_period_grants():
    state = AccountPlanState(account_id='acc').with_subscription('rc:txn_9', sub(provisional=True, at=5))
    state = state.with_period_grant('rc:txn:txn_9', subscription='rc:txn_9', period_end=100, plan_credits=1000)
    adopted = state.with_key_adopted('rc:otx_1', 'pro_monthly')
    assert list(adopted.subscriptions) == ['rc:otx_1'] and not adopted.subscriptions['rc:otx_1'].provisional
    assert adopted.period_grants == {'rc:otx_1@100': 1000}
    assert adopted.with_key_adopted('rc:otx_2', 'pro_monthly') == adopted  # nothing provisional left
    assert state.with_key_adopted('rc:otx_1', 'pro_yearly') == state  # another product
    settled = AccountPlanState(account_id='acc').with_subscription('rc:otx_1', sub())
    assert settled.with_key_adopted('rc:otx_1', 'pro_monthly') == settled  # the key exists already


def test_a_webhook_after_a_provisional_reconciliation_ends_the_same_subscription():
    # Given a reconciliation that saw a renewal but could not name the subscription's original transaction
    book, ledger, _ = make_book()
    ledger.open('acc_1')
    revenuecat = RevenueCatEvents(book, live=False)
    now_ms = int(time.time() * 1000)
    derived = subscriber_events(
        'acc_1',
        response(subscriptions={'pro_monthly': subscription('txn_2', renewal=True, expires_ms=now_ms + DAY_MS)}),
        now_ms=now_ms,
    )
    revenuecat.apply(derived.events[0])
    assert ledger.accounts['acc_1'].plan == 'pro'
    # When the store's expiration of that subscription arrives (keyed by its original transaction)
    revenuecat.apply(
        rc_event(
            'EXPIRATION', 'acc_1', product_id='pro_monthly', transaction_id='txn_2', original_transaction_id='otx_1'
        )
    )
    # Then the plan ends: one subscription, under the store's key
    assert ledger.accounts['acc_1'].plan == 'free'
    assert list(book.plan_state('acc_1').subscriptions) == ['rc:otx_1']


# ---------------------------------------------------------------- the request


def test_a_bare_schedule_event_is_the_default_stripe_backfill():
    scheduled = {'source': 'aws.events', 'detail-type': 'Scheduled Event', 'detail': {}, 'id': 'x'}
    assert BackfillRequest.from_event(scheduled) == BackfillRequest(stripe={})  # type: ignore[arg-type]


@pytest.mark.parametrize('event', [{}, {'stripe': {}, 'extra': 1}, {'revenuecat': {'app_user_ids': []}}])
def test_invalid_requests_are_refused(event):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        BackfillRequest.from_event(event)
