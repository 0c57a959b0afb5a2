"""DynamoDB adapter for the payments items of the events table (``EVENTS_TABLE``).

Item shapes (``pk`` / ``sk``; ``gsi1pk`` / ``gsi1sk`` for what ops list):

- a provider event, stored raw before it is applied:
  ``EVENT#{provider}#{event_id}`` / ``EVENT``; ``status`` received | processed | ignored | parked | rejected |
  failed, ``body`` (the exact bytes received, as text), ``attempts``, ``outcome``, ``error``;
  gsi1: ``PAYMENT_EVENTS#{status}`` / ``{updated_at}#{provider}#{event_id}`` (e.g. every failed event).
- the state of one payment (:class:`atelier.payments.state.PaymentState`):
  ``PAYMENT#{key}`` / ``STATE``; ``version``, ``doc`` (JSON); gsi1: ``ACCOUNT_PAYMENTS#{account}`` or
  ``PAYMENTS#unattributed`` (a refund or dispute for a payment we have not seen paid) / ``PAYMENT#{key}``.
- an account's subscriptions (:class:`atelier.payments.state.AccountPlanState`):
  ``PLAN#{account}`` / ``STATE``; gsi1: ``ACCOUNT_PAYMENTS#{account}`` / ``PLAN``.
- which account a Stripe customer belongs to: ``CUSTOMER#stripe#{customer}`` / ``ACCOUNT``.

States are written with optimistic concurrency on ``version``: a writer that lost the race re-reads.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

EventStatus = Literal['received', 'processed', 'ignored', 'parked', 'rejected', 'failed']

#: Statuses after which a redelivery of the same event changes nothing (ops can still replay it).
SETTLED_STATUSES: frozenset[str] = frozenset({'processed', 'ignored', 'parked', 'rejected'})

_MAX_TEXT_BODY = 300_000  # bigger bodies are stored gzipped, to stay under DynamoDB's 400 KB item limit


def now_iso() -> str:
    return datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


@dataclass(frozen=True)
class StoredEvent:
    provider: str
    event_id: str
    event_type: str
    status: str
    body: bytes
    received_at: str
    attempts: int = 0
    outcome: str = ''
    account_id: str | None = None
    error: str | None = None

    @property
    def settled(self) -> bool:
        return self.status in SETTLED_STATUSES


class VersionConflict(Exception):
    """Someone else wrote the state since it was read."""


class PaymentsTable:
    """The payments items of the events table (low-level boto3 client)."""

    def __init__(self, table_name: str, client: Any) -> None:
        self._table = table_name
        self._client = client

    # ---------------------------------------------------------------- events
    def record_event(self, provider: str, event_id: str, event_type: str, body: bytes) -> tuple[StoredEvent, bool]:
        """Store a verified event raw, once. Returns the stored event and whether it was new."""
        now = now_iso()
        item: dict[str, Any] = {
            **_event_key(provider, event_id),
            'entity': {'S': 'payment_event'},
            'provider': {'S': provider},
            'event_id': {'S': event_id},
            'event_type': {'S': event_type},
            'received_at': {'S': now},
            'attempts': {'N': '0'},
            **_status_attributes('received', provider, event_id, now),
            **_body_attributes(body),
        }
        try:
            self._client.put_item(TableName=self._table, Item=item, ConditionExpression='attribute_not_exists(pk)')
        except self._client.exceptions.ConditionalCheckFailedException:
            existing = self.get_event(provider, event_id)
            if existing is not None:
                return existing, False
            raise
        return _event_from_item(item), True

    def get_event(self, provider: str, event_id: str) -> StoredEvent | None:
        item = self._client.get_item(
            TableName=self._table, Key=_event_key(provider, event_id), ConsistentRead=True
        ).get('Item')
        return _event_from_item(item) if item else None

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
        now = now_iso()
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
        """The oldest events in ``status`` (via gsi1; eventually consistent)."""
        response = self._client.query(
            TableName=self._table,
            IndexName='gsi1',
            KeyConditionExpression='gsi1pk = :pk',
            ExpressionAttributeValues={':pk': {'S': f'PAYMENT_EVENTS#{status}'}},
            Limit=limit,
        )
        return [_event_from_item(item) for item in response.get('Items', [])]

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


def _event_from_item(item: dict[str, Any]) -> StoredEvent:
    body = item['body']['S'].encode('utf-8') if 'body' in item else gzip.decompress(item['body_gz']['B'])
    return StoredEvent(
        provider=item['provider']['S'],
        event_id=item['event_id']['S'],
        event_type=item['event_type']['S'],
        status=item['status']['S'],
        body=body,
        received_at=item['received_at']['S'],
        attempts=int(item.get('attempts', {}).get('N', '0')),
        outcome=item.get('outcome', {}).get('S', ''),
        account_id=item.get('account_id', {}).get('S'),
        error=item.get('error', {}).get('S'),
    )
