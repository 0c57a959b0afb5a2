"""DynamoDB adapter for the payments items of the events table (``EVENTS_TABLE``).

Item shapes (``pk`` / ``sk``; ``gsi1pk`` / ``gsi1sk`` for what ops list):

- a provider event is two items, written in one transaction before it is applied:
  - its record, kept forever: ``EVENT#{provider}#{event_id}`` / ``EVENT``; ``event_type``, ``status`` received |
    processed | ignored | parked | rejected | failed, ``received_at``, ``attempts``, ``outcome``, ``error``,
    ``account_id``, what the event is about (:class:`EventSummary`: ``occurred_at``, ``live``, ``refs``,
    ``amount``, ``currency``; ids and money, no personal data) and ``raw_expires_at`` (when its raw body goes);
    gsi1: ``PAYMENT_EVENTS#{status}`` / ``{updated_at}#{provider}#{event_id}`` (e.g. every failed event).
  - its raw body, kept for the raw-event retention: ``EVENT#{provider}#{event_id}`` / ``RAW``; ``body`` (the
    exact bytes received, as text; ``body_gz`` when large or not UTF-8) and ``expires_at`` (epoch seconds, the
    table's TTL attribute: DynamoDB deletes the item some time after it; reads treat it as gone from then on).
- the state of one payment (:class:`atelier.payments.state.PaymentState`):
  ``PAYMENT#{key}`` / ``STATE``; ``version``, ``doc`` (JSON); gsi1: ``ACCOUNT_PAYMENTS#{account}`` or
  ``PAYMENTS#unattributed`` (a refund or dispute for a payment we have not seen paid) / ``PAYMENT#{key}``.
- an account's subscriptions (:class:`atelier.payments.state.AccountPlanState`):
  ``PLAN#{account}`` / ``STATE``; gsi1: ``ACCOUNT_PAYMENTS#{account}`` / ``PLAN``.
- which account a Stripe customer belongs to: ``CUSTOMER#stripe#{customer}`` / ``ACCOUNT``.
- an account's events (written when an event is attributed to it, for account deletion, which deletes their
  raw bodies): ``ACCOUNT_EVENTS#{account}`` / ``EVENT#{provider}#{event_id}``.

Only the raw body item carries ``expires_at``: every other item of the table is kept.

States are written with optimistic concurrency on ``version``: a writer that lost the race re-reads.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

EventStatus = Literal['received', 'processed', 'ignored', 'parked', 'rejected', 'failed']

#: Statuses after which a redelivery of the same event changes nothing (ops can still replay it).
SETTLED_STATUSES: frozenset[str] = frozenset({'processed', 'ignored', 'parked', 'rejected'})

#: The events table's TTL attribute (``EventsTable.TimeToLiveSpecification`` in the template).
TTL_ATTRIBUTE = 'expires_at'
#: How long a raw event body is kept unless told otherwise (the template's ``RawEventRetentionDays``).
DEFAULT_RAW_RETENTION = timedelta(days=400)

_MAX_TEXT_BODY = 300_000  # bigger bodies are stored gzipped, to stay under DynamoDB's 400 KB item limit
_RECORD_TRIES = 4  # concurrent deliveries of one event collide in their transactions; the loser re-reads

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def now_iso() -> str:
    return iso(utc_now())


@dataclass(frozen=True)
class EventSummary:
    """What an event is about, kept forever on its record (see :mod:`atelier.payments.summary`)."""

    occurred_at: str | None = None  # when the provider says it happened
    live: bool | None = None  # Stripe livemode; RevenueCat environment PRODUCTION
    refs: Mapping[str, str] = field(default_factory=dict)  # provider object ids: checkout_session, transaction ...
    amount: int | None = None  # in the currency's minor unit, as the event states it
    currency: str | None = None  # ISO 4217, lower case


@dataclass(frozen=True)
class StoredEvent:
    """The permanent record of a provider event (its raw body is a separate item: :meth:`PaymentsTable.raw_body`)."""

    provider: str
    event_id: str
    event_type: str
    status: str
    received_at: str
    attempts: int = 0
    outcome: str = ''
    account_id: str | None = None
    error: str | None = None
    summary: EventSummary = field(default_factory=EventSummary)
    raw_expires_at: int | None = None  # epoch seconds; None on records from before the split

    @property
    def settled(self) -> bool:
        return self.status in SETTLED_STATUSES


class VersionConflict(Exception):
    """Someone else wrote the state since it was read."""


class PaymentsTable:
    """The payments items of the events table (low-level boto3 client)."""

    def __init__(
        self,
        table_name: str,
        client: Any,
        *,
        raw_retention: timedelta = DEFAULT_RAW_RETENTION,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table_name
        self._client = client
        self._raw_retention = raw_retention
        self._clock = clock
        self._sleep = sleep

    # ---------------------------------------------------------------- events
    def record_event(
        self, provider: str, event_id: str, event_type: str, body: bytes, summary: EventSummary | None = None
    ) -> tuple[StoredEvent, bool]:
        """Store a verified event once: its record, and its raw body until the raw retention ends.

        Returns the stored record and whether it was new. Both items are written in one transaction, so a
        record never lacks its body before the body's time. A redelivery (the record exists, whether or not
        its body is still kept) writes nothing: the record is what recognises a duplicate.
        """
        received = self._clock()
        expires_at = int((received + self._raw_retention).timestamp())
        now = iso(received)
        who = {'provider': {'S': provider}, 'event_id': {'S': event_id}, 'received_at': {'S': now}}
        record: dict[str, Any] = {
            **_event_key(provider, event_id),
            'entity': {'S': 'payment_event'},
            **who,
            'event_type': {'S': event_type},
            'attempts': {'N': '0'},
            'raw_expires_at': {'N': str(expires_at)},
            **_status_attributes('received', provider, event_id, now),
            **_summary_attributes(summary or EventSummary()),
        }
        raw: dict[str, Any] = {
            **_raw_key(provider, event_id),
            'entity': {'S': 'payment_event_raw'},
            **who,
            TTL_ATTRIBUTE: {'N': str(expires_at)},
            **_body_attributes(body),
        }
        writes = [
            {'Put': {'TableName': self._table, 'Item': record, 'ConditionExpression': 'attribute_not_exists(pk)'}},
            {'Put': {'TableName': self._table, 'Item': raw}},
        ]
        tries = 0
        while True:
            tries += 1
            try:
                self._client.transact_write_items(TransactItems=writes)
            except self._client.exceptions.TransactionCanceledException as exc:
                existing = self.get_event(provider, event_id)
                if existing is not None:
                    return existing, False
                if not _conflicted(exc) or tries == _RECORD_TRIES:
                    raise
                self._sleep(random.uniform(0, 0.05 * 2**tries))  # another delivery's transaction is under way
            else:
                return _event_from_item(record), True

    def get_event(self, provider: str, event_id: str) -> StoredEvent | None:
        """The record of an event (never its raw body)."""
        item = self._client.get_item(
            TableName=self._table, Key=_event_key(provider, event_id), ConsistentRead=True
        ).get('Item')
        return _event_from_item(item) if item else None

    def raw_body(self, provider: str, event_id: str) -> bytes | None:
        """The exact bytes received, or None once the raw retention has ended (deleted by TTL or not yet)."""
        key = _raw_key(provider, event_id)
        item = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True).get('Item')
        if not item or int(item[TTL_ATTRIBUTE]['N']) <= self._clock().timestamp():
            return None
        return item['body']['S'].encode('utf-8') if 'body' in item else gzip.decompress(item['body_gz']['B'])

    def mark_event(
        self,
        provider: str,
        event_id: str,
        status: EventStatus,
        *,
        outcome: str = '',
        account_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record how applying the event went (``attempts`` counts every try)."""
        now = iso(self._clock())
        if account_id:
            # Before the record names the account: the deletion of an account finds every event that names it.
            self._client.put_item(
                TableName=self._table,
                Item={
                    'pk': {'S': f'ACCOUNT_EVENTS#{account_id}'},
                    'sk': {'S': f'EVENT#{provider}#{event_id}'},
                    'entity': {'S': 'account_event'},
                    'provider': {'S': provider},
                    'event_id': {'S': event_id},
                },
            )
        attributes = _status_attributes(status, provider, event_id, now)
        names = {f'#{k}': k for k in attributes}
        values = {f':{k}': v for k, v in attributes.items()}
        sets = [f'#{k} = :{k}' for k in attributes]
        values[':outcome'] = {'S': outcome}
        sets.append('outcome = :outcome')
        if account_id:
            values[':account_id'] = {'S': account_id}
            sets.append('account_id = :account_id')
        removes = []
        if error:
            values[':error'] = {'S': error[:1000]}
            sets.append('#error = :error')
        else:
            removes.append('#error')
        names['#error'] = 'error'
        values[':one'] = {'N': '1'}
        expression = f'SET {", ".join(sets)} ADD attempts :one' + (f' REMOVE {", ".join(removes)}' if removes else '')
        self._client.update_item(
            TableName=self._table,
            Key=_event_key(provider, event_id),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def events_with_status(self, status: EventStatus, *, limit: int = 50) -> list[StoredEvent]:
        """The oldest events in ``status`` whose raw body is still kept (via gsi1; eventually consistent).

        Events whose raw body has expired can never be applied again: they are passed over, so that they do
        not hold the newer ones back (their records stay in the index for ops to see).
        """
        found: list[StoredEvent] = []
        start: dict[str, Any] | None = None
        while len(found) < limit:
            response = self._client.query(
                TableName=self._table,
                IndexName='gsi1',
                KeyConditionExpression='gsi1pk = :pk',
                FilterExpression='raw_expires_at > :now',
                ExpressionAttributeValues={
                    ':pk': {'S': f'PAYMENT_EVENTS#{status}'},
                    ':now': {'N': str(int(self._clock().timestamp()))},
                },
                Limit=limit,
                **({'ExclusiveStartKey': start} if start else {}),
            )
            found += [_event_from_item(item) for item in response.get('Items', [])]
            start = response.get('LastEvaluatedKey')
            if not start:
                break
        return found[:limit]

    def delete_raw_bodies(self, account_id: str) -> int:
        """Delete the raw bodies of the events attributed to the account (account deletion); how many were
        still kept. The records stay: ids, statuses, amounts, no personal data."""
        deleted = 0
        request: dict[str, Any] = {
            'TableName': self._table,
            'KeyConditionExpression': 'pk = :pk',
            'ExpressionAttributeValues': {':pk': {'S': f'ACCOUNT_EVENTS#{account_id}'}},
            'ConsistentRead': True,
        }
        while True:
            page = self._client.query(**request)
            for item in page.get('Items', []):
                response = self._client.delete_item(
                    TableName=self._table,
                    Key=_raw_key(item['provider']['S'], item['event_id']['S']),
                    ReturnValues='ALL_OLD',
                )
                deleted += 'Attributes' in response
            if 'LastEvaluatedKey' not in page:
                return deleted
            request['ExclusiveStartKey'] = page['LastEvaluatedKey']

    # ---------------------------------------------------------------- versioned states
    def load_state(self, pk: str) -> tuple[dict[str, Any] | None, int]:
        item = self._client.get_item(
            TableName=self._table, Key={'pk': {'S': pk}, 'sk': {'S': 'STATE'}}, ConsistentRead=True
        ).get('Item')
        if not item:
            return None, 0
        return json.loads(item['doc']['S']), int(item['version']['N'])

    def save_state(self, pk: str, doc: dict[str, Any], *, version: int, entity: str, index: tuple[str, str]) -> int:
        """Write ``doc`` as version ``version + 1`` if the stored version is still ``version``."""
        item = {
            'pk': {'S': pk},
            'sk': {'S': 'STATE'},
            'entity': {'S': entity},
            'version': {'N': str(version + 1)},
            'doc': {'S': json.dumps(doc, separators=(',', ':'), sort_keys=True)},
            'gsi1pk': {'S': index[0]},
            'gsi1sk': {'S': index[1]},
            'updated_at': {'S': now_iso()},
        }
        if version == 0:
            condition: dict[str, Any] = {'ConditionExpression': 'attribute_not_exists(pk)'}
        else:
            condition = {
                'ConditionExpression': 'version = :version',
                'ExpressionAttributeValues': {':version': {'N': str(version)}},
            }
        try:
            self._client.put_item(TableName=self._table, Item=item, **condition)
        except self._client.exceptions.ConditionalCheckFailedException as exc:
            raise VersionConflict(pk) from exc
        return version + 1

    # ---------------------------------------------------------------- customers
    def remember_customer(self, customer_id: str, account_id: str) -> None:
        """Map a Stripe customer to an account (the first mapping stays)."""
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.put_item(
                TableName=self._table,
                Item={
                    'pk': {'S': f'CUSTOMER#stripe#{customer_id}'},
                    'sk': {'S': 'ACCOUNT'},
                    'entity': {'S': 'stripe_customer'},
                    'account_id': {'S': account_id},
                    'created_at': {'S': now_iso()},
                },
                ConditionExpression='attribute_not_exists(pk)',
            )

    def account_of_customer(self, customer_id: str) -> str | None:
        item = self._client.get_item(
            TableName=self._table,
            Key={'pk': {'S': f'CUSTOMER#stripe#{customer_id}'}, 'sk': {'S': 'ACCOUNT'}},
            ConsistentRead=True,
        ).get('Item')
        return item['account_id']['S'] if item else None


def _event_key(provider: str, event_id: str) -> dict[str, dict[str, str]]:
    return {'pk': {'S': f'EVENT#{provider}#{event_id}'}, 'sk': {'S': 'EVENT'}}


def _raw_key(provider: str, event_id: str) -> dict[str, dict[str, str]]:
    return {'pk': {'S': f'EVENT#{provider}#{event_id}'}, 'sk': {'S': 'RAW'}}


def _conflicted(exc: Any) -> bool:
    """Whether a cancelled transaction collided with another one (rather than failing its condition)."""
    reasons = exc.response.get('CancellationReasons') or []
    return any(reason.get('Code') == 'TransactionConflict' for reason in reasons)


def _status_attributes(status: str, provider: str, event_id: str, now: str) -> dict[str, dict[str, str]]:
    return {
        'status': {'S': status},
        'updated_at': {'S': now},
        'gsi1pk': {'S': f'PAYMENT_EVENTS#{status}'},
        'gsi1sk': {'S': f'{now}#{provider}#{event_id}'},
    }


def _body_attributes(body: bytes) -> dict[str, dict[str, Any]]:
    if len(body) <= _MAX_TEXT_BODY:
        try:
            return {'body': {'S': body.decode('utf-8')}}
        except UnicodeDecodeError:
            pass
    return {'body_gz': {'B': gzip.compress(body)}}


def _summary_attributes(summary: EventSummary) -> dict[str, dict[str, Any]]:
    attributes: dict[str, dict[str, Any]] = {}
    if summary.occurred_at is not None:
        attributes['occurred_at'] = {'S': summary.occurred_at}
    if summary.live is not None:
        attributes['live'] = {'BOOL': summary.live}
    if summary.refs:
        attributes['refs'] = {'M': {name: {'S': value} for name, value in summary.refs.items()}}
    if summary.amount is not None:
        attributes['amount'] = {'N': str(summary.amount)}
    if summary.currency is not None:
        attributes['currency'] = {'S': summary.currency}
    return attributes


def _event_from_item(item: dict[str, Any]) -> StoredEvent:
    summary = EventSummary(
        occurred_at=item.get('occurred_at', {}).get('S'),
        live=item.get('live', {}).get('BOOL'),
        refs={name: value['S'] for name, value in item.get('refs', {}).get('M', {}).items()},
        amount=int(item['amount']['N']) if 'amount' in item else None,
        currency=item.get('currency', {}).get('S'),
    )
    return StoredEvent(
        provider=item['provider']['S'],
        event_id=item['event_id']['S'],
        event_type=item['event_type']['S'],
        status=item['status']['S'],
        received_at=item['received_at']['S'],
        attempts=int(item.get('attempts', {}).get('N', '0')),
        outcome=item.get('outcome', {}).get('S', ''),
        account_id=item.get('account_id', {}).get('S'),
        error=item.get('error', {}).get('S'),
        summary=summary,
        raw_expires_at=int(item['raw_expires_at']['N']) if 'raw_expires_at' in item else None,
    )
