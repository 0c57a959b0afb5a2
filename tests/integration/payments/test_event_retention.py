"""Personal data in the payment inbox expires: a raw body lives in its own item, deleted by the table's TTL
``RawEventRetentionDays`` after receipt, while the event's record (ids, status, amounts) is kept forever."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from atelier.payments.store import PaymentsTable
from tests.integration.payments.conftest import World, personal_data_in, set_setting
from tests.support_payments import checkout_session, rc_purchase, stripe_event

DAY = 24 * 3600
BUYER = {
    'email': 'jenny.rosen@example.com',
    'name': 'Jenny Rosen',
    'phone': '+15555550100',
    'address': {'line1': '510 Townsend St', 'city': 'San Francisco', 'postal_code': '94103', 'country': 'US'},
}


def paid_checkout(account: str, **options: Any) -> dict[str, Any]:
    """A paid pack checkout with the buyer's details on it, as Stripe sends it."""
    session = checkout_session(account, **options)
    session.update(customer='cus_retention', customer_details=BUYER, customer_email=BUYER['email'])
    return stripe_event('checkout.session.completed', session)


def epoch(iso: str) -> int:
    return int(datetime.strptime(iso, '%Y-%m-%dT%H:%M:%S.%fZ').replace(tzinfo=UTC).timestamp())


def fail_ledger_grants(monkeypatch: pytest.MonkeyPatch) -> None:
    from atelier.ledger import Ledger

    def down(self, *args, **kwargs):
        raise ConnectionError('ledger unavailable')

    monkeypatch.setattr(Ledger, 'grant', down)


def expire_raw_body(world: World, provider: str, event_id: str, *, deleted: bool) -> None:
    """Make the retention of an event's raw body end now: as if it had been received RawEventRetentionDays ago.

    ``deleted``: DynamoDB's TTL has removed the item; otherwise it is still there (TTL deletes within days).
    """
    past = {':past': {'N': str(int(time.time()) - 1)}}
    key = {'pk': {'S': f'EVENT#{provider}#{event_id}'}}
    world.ddb.update_item(
        TableName=world.events_table,
        Key={**key, 'sk': {'S': 'EVENT'}},
        UpdateExpression='SET raw_expires_at = :past',
        ExpressionAttributeValues=past,
    )
    if deleted:
        world.ddb.delete_item(TableName=world.events_table, Key={**key, 'sk': {'S': 'RAW'}})
    else:
        world.ddb.update_item(
            TableName=world.events_table,
            Key={**key, 'sk': {'S': 'RAW'}},
            UpdateExpression='SET expires_at = :past',
            ExpressionAttributeValues=past,
        )


# ---------------------------------------------------------------- the two items


def test_the_raw_body_is_its_own_item_expiring_400_days_after_receipt(world: World):
    # Given a paid checkout with the buyer's email and address on it
    account = world.account()
    event = paid_checkout(account)
    raw = json.dumps(event)
    # When Stripe delivers it
    assert world.stripe(raw).body['status'] == 'processed'
    # Then the exact bytes are kept in the RAW item, which carries the table's TTL attribute: receipt + 400 days
    record, body = world.event_item('stripe', event['id']), world.event_item('stripe', event['id'], 'RAW')
    assert record is not None and body is not None
    assert world.raw('stripe', event['id']) == raw.encode()
    expires_at = int(body['expires_at']['N'])
    assert expires_at == int(
        (datetime.fromtimestamp(epoch(record['received_at']['S']), UTC) + timedelta(days=400)).timestamp()
    )
    assert expires_at == int(record['raw_expires_at']['N'])
    # and the record, kept forever, has no TTL attribute and no body
    assert not {'expires_at', 'body', 'body_gz'} & set(record)


def test_the_retention_is_the_deployed_parameter(world: World, monkeypatch: pytest.MonkeyPatch):
    # Given a stage deployed with RawEventRetentionDays=30 (the template passes it as RAW_EVENT_RETENTION_DAYS;
    # tests/unit/infra/test_template.py checks that wiring)
    set_setting(monkeypatch, 'RAW_EVENT_RETENTION_DAYS', '30')
    # When an event arrives
    event = paid_checkout(world.account())
    world.stripe(event)
    # Then its raw body expires 30 days after it was received
    record, body = world.event_item('stripe', event['id']), world.event_item('stripe', event['id'], 'RAW')
    assert record is not None and body is not None
    assert int(body['expires_at']['N']) == epoch(record['received_at']['S']) + 30 * DAY


def test_the_store_dates_the_expiry_by_its_clock_and_honours_it_before_ttl_deletes(world: World):
    # Given the store at a fixed moment, keeping raw bodies 10 days
    received = datetime(2027, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    now = [received]
    table = PaymentsTable(world.events_table, world.ddb, raw_retention=timedelta(days=10), clock=lambda: now[0])
    stored, new = table.record_event('stripe', 'evt_clock', 'charge.refunded', b'{"email": "a@b.c"}')
    # Then the body expires exactly 10 days later
    assert new and stored.raw_expires_at == int(datetime(2027, 3, 11, 12, 0, 0, tzinfo=UTC).timestamp())
    body = world.event_item('stripe', 'evt_clock', 'RAW')
    assert body is not None and int(body['expires_at']['N']) == stored.raw_expires_at
    # and it is read until then, and not from then on, though TTL has not deleted the item yet
    now[0] = received + timedelta(days=10) - timedelta(seconds=1)
    assert table.raw_body('stripe', 'evt_clock') == b'{"email": "a@b.c"}'
    now[0] = received + timedelta(days=10)
    assert table.raw_body('stripe', 'evt_clock') is None
    assert world.event_item('stripe', 'evt_clock', 'RAW') is not None


def test_a_large_body_is_kept_gzipped_in_the_raw_item(world: World):
    table = world.table()
    body = json.dumps({'padding': 'x' * 400_000}).encode()
    table.record_event('stripe', 'evt_large', 'charge.refunded', body)
    item = world.event_item('stripe', 'evt_large', 'RAW')
    assert item is not None and 'body_gz' in item and 'expires_at' in item
    assert table.raw_body('stripe', 'evt_large') == body


# ---------------------------------------------------------------- the permanent record


def test_the_record_keeps_ids_status_account_and_amount_but_no_personal_data(world: World):
    # Given a paid checkout with the buyer's details
    account = world.account()
    event = paid_checkout(account, session_id='cs_test_kept', payment_intent='pi_kept', amount_total=499)
    # When it is applied
    world.stripe(event)
    # Then its record says what happened, in ids and money
    stored = world.stored('stripe', event['id'])
    assert (stored.event_type, stored.status, stored.account_id) == ('checkout.session.completed', 'processed', account)
    assert 'stripe:checkout:cs_test_kept' in stored.outcome  # the business id it booked
    assert dict(stored.summary.refs) == {
        'checkout_session': 'cs_test_kept',
        'payment_intent': 'pi_kept',
        'customer': 'cus_retention',
    }
    assert (stored.summary.amount, stored.summary.currency, stored.summary.live) == (499, 'usd', False)
    assert stored.summary.occurred_at is not None
    # and nothing about the buyer
    record = world.event_item('stripe', event['id'])
    assert record is not None and personal_data_in(record, event) == []
    assert personal_data_in(world.event_item('stripe', event['id'], 'RAW') or {}, event) != []  # (the check bites)


def test_a_store_purchase_record_keeps_the_transaction_and_price_but_no_subscriber_attributes(world: World):
    account = world.account()
    body = rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', 'txn_kept', price=4.99)
    body['event']['subscriber_attributes'] = {
        '$email': {'value': BUYER['email'], 'updated_at_ms': 1},
        '$displayName': {'value': BUYER['name'], 'updated_at_ms': 1},
        '$phoneNumber': {'value': BUYER['phone'], 'updated_at_ms': 1},
    }
    assert world.rc(body).body['status'] == 'processed'
    stored = world.stored('revenuecat', body['event']['id'])
    assert (stored.status, stored.account_id) == ('processed', account)
    assert stored.summary.refs['transaction'] == 'txn_kept' and stored.summary.refs['product'] == 'credits_100'
    assert (stored.summary.amount, stored.summary.currency) == (499, 'usd')
    record = world.event_item('revenuecat', body['event']['id'])
    assert record is not None and personal_data_in(record, body) == []


def test_a_parked_event_keeps_its_amount_for_the_books(world: World):
    # Money received for an account we do not know: the record keeps what was paid after the body is gone
    event = paid_checkout('acc_unknown_00000001', amount_total=1999)
    assert world.stripe(event).body['status'] == 'parked'
    expire_raw_body(world, 'stripe', event['id'], deleted=True)
    stored = world.stored('stripe', event['id'])
    assert (stored.status, stored.summary.amount, stored.summary.currency) == ('parked', 1999, 'usd')


# ---------------------------------------------------------------- replay and redelivery


def test_replay_applies_while_the_body_is_kept(world: World, monkeypatch: pytest.MonkeyPatch):
    account = world.account()
    event = paid_checkout(account)
    with monkeypatch.context() as patch:
        fail_ledger_grants(patch)
        assert world.stripe(event).status == 503
    result = world.replay({'provider': 'stripe', 'event_id': event['id']})
    assert result['replayed'][0]['status'] == 'processed'
    assert world.balance(account) == 100


@pytest.mark.parametrize('deleted', [True, False], ids=['deleted-by-ttl', 'not-yet-deleted'])
def test_replay_answers_expired_once_the_body_is_gone_and_changes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch, deleted: bool
):
    # Given an event that failed, and whose raw body's retention has ended
    account = world.account()
    event = paid_checkout(account)
    with monkeypatch.context() as patch:
        fail_ledger_grants(patch)
        assert world.stripe(event).status == 503
    expire_raw_body(world, 'stripe', event['id'], deleted=deleted)
    before = world.event_item('stripe', event['id'])
    # When ops replay it
    result = world.replay({'provider': 'stripe', 'event_id': event['id']})
    # Then the answer says the body expired, and nothing is applied or changed
    (reply,) = result['replayed']
    assert reply['status'] == 'expired' and reply['detail'].startswith('raw body expired on ')
    assert world.balance(account) == 0
    assert world.event_item('stripe', event['id']) == before
    assert world.stored('stripe', event['id']).status == 'failed'


def test_a_replay_by_status_passes_over_events_whose_body_expired(world: World, monkeypatch: pytest.MonkeyPatch):
    # Given two failed events, the older of which can no longer be applied
    account = world.account()
    old, new = paid_checkout(account), paid_checkout(account)
    with monkeypatch.context() as patch:
        fail_ledger_grants(patch)
        assert world.stripe(old).status == 503
        assert world.stripe(new).status == 503
    expire_raw_body(world, 'stripe', old['id'], deleted=True)
    # When ops replay the oldest failed event
    result = world.replay({'status': 'failed', 'limit': 1})
    # Then it is the newer one (the expired one does not hold it back), and it is granted
    assert [(r['event_id'], r['status']) for r in result['replayed']] == [(new['id'], 'processed')]
    assert world.balance(account) == 100
    assert world.replay({'status': 'failed'}) == {'replayed': []}
    assert world.stored('stripe', old['id']).status == 'failed'  # still listed for ops, by its record


@pytest.mark.parametrize('provider', ['stripe', 'revenuecat'])
def test_a_redelivery_after_the_body_expired_is_still_a_duplicate(world: World, provider: str):
    # Given an event applied long ago, whose raw body TTL has deleted
    account = world.account()
    if provider == 'stripe':
        event = paid_checkout(account)
        event_id, deliver = event['id'], lambda: world.stripe(event)
    else:
        body = rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', 'txn_redelivered')
        event_id, deliver = body['event']['id'], lambda: world.rc(body)
    assert deliver().body['status'] == 'processed'
    expire_raw_body(world, provider, event_id, deleted=True)
    # When the provider delivers it again (or a backfill finds it)
    reply = deliver()
    # Then the record recognises it: a duplicate, nothing granted twice, and the body is not stored again
    assert (reply.status, reply.body['status']) == (200, 'duplicate')
    assert world.balance(account) == 100
    assert world.event_item(provider, event_id, 'RAW') is None
    assert world.stored(provider, event_id).attempts == 1


def test_a_delivery_whose_transaction_collides_with_another_tries_again(world: World):
    # Given DynamoDB cancelling the first write because another delivery's transaction held the items
    calls: list[int] = []
    real = world.ddb.transact_write_items

    def colliding(**request: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            reasons = [{'Code': 'None'}, {'Code': 'TransactionConflict'}]
            error = {'Error': {'Code': 'TransactionCanceledException', 'Message': 'conflict'}}
            raise world.ddb.exceptions.TransactionCanceledException(
                {**error, 'CancellationReasons': reasons}, 'TransactWriteItems'
            )
        return real(**request)

    world.ddb.transact_write_items = colliding
    table = PaymentsTable(world.events_table, world.ddb, sleep=lambda seconds: None)
    # When the event is recorded
    stored, new = table.record_event('stripe', 'evt_collided', 'charge.refunded', b'{}')
    # Then the second try stores both items
    assert new and len(calls) == 2 and stored.status == 'received'
    assert table.raw_body('stripe', 'evt_collided') == b'{}'
