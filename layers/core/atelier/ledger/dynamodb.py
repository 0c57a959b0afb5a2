"""The ledger store on DynamoDB (``LedgerTable`` in template.yaml), through the boto3 low-level client.

One partition per account (``pk = ACCT#{account_id}``) holds all of its items:

============  ================================  ==========================================================
item          sk                                 index keys
============  ================================  ==========================================================
account       ``ACCOUNT``                        -
lot           ``LOT#{lot_id}``                   ``gsi1pk = LOTEXP#{shard}``, ``gsi1sk = {expires_at}#{account}#{lot}``
                                                 while it has an expiry, open credit and is not booked out
hold          ``HOLD#{task_id}``                 -
entry         ``ENTRY#{business_id}``            ``lsi1sk = ENTRY#{created_at}#{business_id}`` (listing)
============  ================================  ==========================================================

Every write goes through :meth:`DynamoDBLedgerStore.commit`: one ``TransactWriteItems`` with the entry
(``attribute_not_exists``), the account (version check), the hold (new, or still open) and the lots
(version checks), followed by the caller's extra items. Numbers are DynamoDB ``N`` holding whole credits.
See docs/ledger.md for the design and the write costs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from atelier.ledger.models import (
    AccountState,
    Entry,
    EntryKind,
    HoldState,
    HoldStatus,
    Leg,
    LegEffect,
    LotKind,
    LotState,
    format_ts,
    parse_ts,
)
from atelier.ledger.ports import (
    Change,
    CommitRejected,
    EntryPosition,
    HoldWrite,
    LedgerStore,
    LotWrite,
    StoredEntry,
    StoreUnavailable,
)

Item = dict[str, Any]

EXPIRY_SHARDS = 8
"""The expiry index is spread over this many ``gsi1pk`` values so that no index partition runs hot."""

_TRANSIENT = frozenset(
    {
        'ProvisionedThroughputExceededException',
        'ThrottlingException',
        'RequestLimitExceeded',
        'InternalServerError',
        'ServiceUnavailable',
        'TransactionConflictException',
        'TransactionInProgressException',
    }
)
_RETRYABLE_REASONS = frozenset(
    {'None', 'ConditionalCheckFailed', 'TransactionConflict', 'ThrottlingError', 'ProvisionedThroughputExceeded'}
)


def account_key(account_id: str) -> Item:
    return {'pk': {'S': f'ACCT#{account_id}'}, 'sk': {'S': 'ACCOUNT'}}


def lot_key(account_id: str, lot_id: str) -> Item:
    return {'pk': {'S': f'ACCT#{account_id}'}, 'sk': {'S': f'LOT#{lot_id}'}}


def hold_key(account_id: str, task_id: str) -> Item:
    return {'pk': {'S': f'ACCT#{account_id}'}, 'sk': {'S': f'HOLD#{task_id}'}}


def entry_key(account_id: str, business_id: str) -> Item:
    return {'pk': {'S': f'ACCT#{account_id}'}, 'sk': {'S': f'ENTRY#{business_id}'}}


def entry_position_key(seq: int) -> str:
    return f'ENTRY#{seq:015d}'


def _n(value: int) -> Item:
    return {'N': str(value)}


def _s(value: str) -> Item:
    return {'S': value}


def _int(item: Item, name: str) -> int:
    return int(item[name]['N'])


def _str(item: Item, name: str) -> str:
    return str(item[name]['S'])


def _opt_str(item: Item, name: str) -> str | None:
    return str(item[name]['S']) if name in item else None


def _opt_ts(item: Item, name: str) -> datetime | None:
    return parse_ts(item[name]['S']) if name in item else None


def _legs_attr(legs: Sequence[Leg]) -> Item:
    return {
        'L': [{'M': {'lot': _s(leg.lot_id), 'amount': _n(leg.amount), 'effect': _s(leg.effect.value)}} for leg in legs]
    }


def _legs(item: Item, name: str = 'legs') -> tuple[Leg, ...]:
    return tuple(
        Leg(lot_id=m['M']['lot']['S'], amount=int(m['M']['amount']['N']), effect=LegEffect(m['M']['effect']['S']))
        for m in item.get(name, {'L': []})['L']
    )


# ---------------------------------------------------------------- item <-> state


def account_from_item(item: Item) -> AccountState:
    return AccountState(
        account_id=_str(item, 'account_id'),
        plan=_str(item, 'plan'),
        available=_int(item, 'available'),
        held=_int(item, 'held'),
        owed=_int(item, 'owed'),
        open_holds=_int(item, 'open_holds'),
        version=_int(item, 'v'),
        created_at=parse_ts(_str(item, 'created_at')),
        updated_at=parse_ts(_str(item, 'updated_at')),
    )


def account_to_item(account: AccountState) -> Item:
    return {
        **account_key(account.account_id),
        'type': _s('account'),
        'account_id': _s(account.account_id),
        'plan': _s(account.plan),
        'available': _n(account.available),
        'held': _n(account.held),
        'owed': _n(account.owed),
        'open_holds': _n(account.open_holds),
        'v': _n(account.version),
        'created_at': _s(format_ts(account.created_at)),
        'updated_at': _s(format_ts(account.updated_at)),
    }


def expiry_shard(account_id: str, shards: int = EXPIRY_SHARDS) -> str:
    return f'LOTEXP#{int.from_bytes(hashlib.sha256(account_id.encode()).digest()[:4], "big") % shards}'


def lot_from_item(item: Item) -> LotState:
    return LotState(
        account_id=_str(item, 'account_id'),
        lot_id=_str(item, 'lot_id'),
        kind=LotKind(_str(item, 'kind')),
        source=_str(item, 'source'),
        granted=_int(item, 'granted'),
        remaining=_int(item, 'remaining'),
        held=_int(item, 'held'),
        used=_int(item, 'used'),
        expired=_int(item, 'expired'),
        clawed=_int(item, 'clawed'),
        expires_at=_opt_ts(item, 'expires_at'),
        created_at=parse_ts(_str(item, 'created_at')),
        expiry_booked_at=_opt_ts(item, 'expiry_booked_at'),
        version=_int(item, 'v'),
    )


def lot_to_item(lot: LotState, shards: int = EXPIRY_SHARDS) -> Item:
    item: Item = {
        **lot_key(lot.account_id, lot.lot_id),
        'type': _s('lot'),
        'account_id': _s(lot.account_id),
        'lot_id': _s(lot.lot_id),
        'kind': _s(lot.kind.value),
        'source': _s(lot.source),
        'granted': _n(lot.granted),
        'remaining': _n(lot.remaining),
        'held': _n(lot.held),
        'used': _n(lot.used),
        'expired': _n(lot.expired),
        'clawed': _n(lot.clawed),
        'created_at': _s(format_ts(lot.created_at)),
        'v': _n(lot.version),
    }
    if lot.expires_at is not None:
        item['expires_at'] = _s(format_ts(lot.expires_at))
        if lot.expiry_booked_at is None and lot.open:
            # Sparse index: only lots the expiry job still has to look at.
            item['gsi1pk'] = _s(expiry_shard(lot.account_id, shards))
            item['gsi1sk'] = _s(f'{format_ts(lot.expires_at)}#{lot.account_id}#{lot.lot_id}')
    if lot.expiry_booked_at is not None:
        item['expiry_booked_at'] = _s(format_ts(lot.expiry_booked_at))
    return item


def hold_from_item(item: Item) -> HoldState:
    return HoldState(
        account_id=_str(item, 'account_id'),
        task_id=_str(item, 'task_id'),
        amount=_int(item, 'amount'),
        legs=_legs(item),
        status=HoldStatus(_str(item, 'status')),
        created_at=parse_ts(_str(item, 'created_at')),
        closed_at=_opt_ts(item, 'closed_at'),
    )


def hold_to_item(hold: HoldState) -> Item:
    item: Item = {
        **hold_key(hold.account_id, hold.task_id),
        'type': _s('hold'),
        'account_id': _s(hold.account_id),
        'task_id': _s(hold.task_id),
        'amount': _n(hold.amount),
        'legs': _legs_attr(hold.legs),
        'status': _s(hold.status.value),
        'created_at': _s(format_ts(hold.created_at)),
    }
    if hold.closed_at is not None:
        item['closed_at'] = _s(format_ts(hold.closed_at))
    return item


def entry_from_item(item: Item) -> StoredEntry:
    entry = Entry(
        id=_str(item, 'id'),
        account_id=_str(item, 'account_id'),
        seq=_int(item, 'seq'),
        kind=EntryKind(_str(item, 'kind')),
        amount=_int(item, 'amount'),
        held_delta=_int(item, 'held_delta'),
        lot=_opt_str(item, 'lot'),
        legs=_legs(item),
        task_id=_opt_str(item, 'task_id'),
        reference=_opt_str(item, 'reference'),
        actor=_opt_str(item, 'actor'),
        captured=_int(item, 'captured'),
        expired=_int(item, 'expired'),
        repaid=_int(item, 'repaid'),
        created_at=parse_ts(_str(item, 'created_at')),
    )
    return StoredEntry(entry=entry, params=_str(item, 'params'))


def entry_to_item(stored: StoredEntry) -> Item:
    entry = stored.entry
    created = format_ts(entry.created_at)
    item: Item = {
        **entry_key(entry.account_id, entry.id),
        'type': _s('entry'),
        'lsi1sk': _s(entry_position_key(entry.seq)),
        'id': _s(entry.id),
        'account_id': _s(entry.account_id),
        'seq': _n(entry.seq),
        'kind': _s(entry.kind.value),
        'amount': _n(entry.amount),
        'held_delta': _n(entry.held_delta),
        'legs': _legs_attr(entry.legs),
        'captured': _n(entry.captured),
        'expired': _n(entry.expired),
        'repaid': _n(entry.repaid),
        'params': _s(stored.params),
        'created_at': _s(created),
    }
    for name in ('lot', 'task_id', 'reference', 'actor'):
        value = getattr(entry, name)
        if value is not None:
            item[name] = _s(value)
    return item


# ---------------------------------------------------------------- the store


class DynamoDBLedgerStore:
    """:class:`~atelier.ledger.ports.LedgerStore` on one DynamoDB table.

    Parameters
    ----------
    client
        A boto3 DynamoDB client (low-level).
    table_name
        The ``LedgerTable``'s physical name.
    """

    def __init__(self, client: Any, table_name: str, *, expiry_shards: int = EXPIRY_SHARDS) -> None:
        self._client = client
        self.table_name = table_name
        self._shards = expiry_shards

    # ------------------------------------------------------------ reads

    def load_account(self, account_id: str) -> AccountState | None:
        item = self._get(account_key(account_id))
        return account_from_item(item) if item else None

    def load_account_isolated(self, account_id: str) -> AccountState | None:
        # A GetItem is ordered before a transaction that has not committed the item yet, and returns the old
        # value; a TransactGetItems is cancelled instead (TransactionConflict). 2 RCU instead of 1.
        with _store_call():
            try:
                response = self._client.transact_get_items(
                    TransactItems=[{'Get': {'TableName': self.table_name, 'Key': account_key(account_id)}}]
                )
            except ClientError as error:
                if error.response['Error']['Code'] != 'TransactionCanceledException':
                    raise
                reasons = [reason.get('Code', 'None') for reason in error.response.get('CancellationReasons', [])]
                if any(code not in _RETRYABLE_REASONS for code in reasons):
                    raise
                raise StoreUnavailable(f'a write to account {account_id} is in flight') from None
        item: Item | None = response['Responses'][0].get('Item')
        return account_from_item(item) if item else None

    def load_lots(self, account_id: str, *, open_only: bool = True) -> list[LotState]:
        kwargs: dict[str, Any] = {
            'KeyConditionExpression': 'pk = :pk AND begins_with(sk, :prefix)',
            'ExpressionAttributeValues': {':pk': _s(f'ACCT#{account_id}'), ':prefix': _s('LOT#')},
        }
        if open_only:
            kwargs['FilterExpression'] = '#remaining > :zero OR #held > :zero'
            kwargs['ExpressionAttributeNames'] = {'#remaining': 'remaining', '#held': 'held'}
            kwargs['ExpressionAttributeValues'][':zero'] = _n(0)
        return [lot_from_item(item) for item in self._query(**kwargs)]

    def load_lot(self, account_id: str, lot_id: str) -> LotState | None:
        item = self._get(lot_key(account_id, lot_id))
        return lot_from_item(item) if item else None

    def load_hold(self, account_id: str, task_id: str) -> HoldState | None:
        item = self._get(hold_key(account_id, task_id))
        return hold_from_item(item) if item else None

    def load_holds(self, account_id: str, *, open_only: bool = True) -> list[HoldState]:
        kwargs: dict[str, Any] = {
            'KeyConditionExpression': 'pk = :pk AND begins_with(sk, :prefix)',
            'ExpressionAttributeValues': {':pk': _s(f'ACCT#{account_id}'), ':prefix': _s('HOLD#')},
        }
        if open_only:
            kwargs['FilterExpression'] = '#status = :open'
            kwargs['ExpressionAttributeNames'] = {'#status': 'status'}
            kwargs['ExpressionAttributeValues'][':open'] = _s(HoldStatus.OPEN.value)
        return [hold_from_item(item) for item in self._query(**kwargs)]

    def load_entry(self, account_id: str, business_id: str) -> StoredEntry | None:
        item = self._get(entry_key(account_id, business_id))
        return entry_from_item(item) if item else None

    def query_entries(self, account_id: str, *, limit: int, after: EntryPosition | None = None) -> list[Entry]:
        kwargs: dict[str, Any] = {
            'IndexName': 'lsi1',
            'KeyConditionExpression': 'pk = :pk AND begins_with(lsi1sk, :prefix)',
            'ExpressionAttributeValues': {':pk': _s(f'ACCT#{account_id}'), ':prefix': _s('ENTRY#')},
            'ScanIndexForward': False,
        }
        if after is not None:
            seq, business_id = after
            kwargs['ExclusiveStartKey'] = {**entry_key(account_id, business_id), 'lsi1sk': _s(entry_position_key(seq))}
        return [entry_from_item(item).entry for item in self._query(limit=limit, **kwargs)]

    def due_lots(self, now: datetime) -> Iterator[tuple[str, str]]:
        # '$' sorts right after '#', so this bound admits every expiry up to and including ``now``.
        bound = f'{format_ts(now)}$'
        for shard in range(self._shards):
            for item in self._query(
                consistent=False,
                IndexName='gsi1',
                KeyConditionExpression='gsi1pk = :shard AND gsi1sk < :bound',
                ExpressionAttributeValues={':shard': _s(f'LOTEXP#{shard}'), ':bound': _s(bound)},
            ):
                yield _str(item, 'account_id'), _str(item, 'lot_id')

    def account_ids(self) -> Iterator[str]:
        paginator = self._client.get_paginator('scan')
        pages = paginator.paginate(
            TableName=self.table_name,
            FilterExpression='sk = :account',
            ExpressionAttributeValues={':account': _s('ACCOUNT')},
            ProjectionExpression='pk',
        )
        with _store_call():
            for page in pages:
                for item in page.get('Items', []):
                    yield _str(item, 'pk').removeprefix('ACCT#')

    # ------------------------------------------------------------ writes

    def set_plan(self, account_id: str, plan: str, now: datetime) -> bool:
        try:
            with _store_call():
                self._client.update_item(
                    TableName=self.table_name,
                    Key=account_key(account_id),
                    UpdateExpression='SET #plan = :plan, #updated = :now',
                    ConditionExpression='attribute_exists(pk)',
                    ExpressionAttributeNames={'#plan': 'plan', '#updated': 'updated_at'},
                    ExpressionAttributeValues={':plan': _s(plan), ':now': _s(format_ts(now))},
                )
        except ClientError as error:
            if error.response['Error']['Code'] == 'ConditionalCheckFailedException':
                return False
            raise
        return True

    def commit(self, change: Change, extra_items: Sequence[Mapping[str, Any]] = ()) -> None:
        items: list[Item] = []
        entry_at = account_at = hold_at = None
        if change.entry is not None:
            entry_at = len(items)
            items.append(self._put_new(entry_to_item(change.entry)))
        if change.account_after is not None:
            account_at = len(items)
            items.append(self._write_account(change.account_before, change.account_after))
        if change.hold is not None:
            hold_at = len(items)
            items.append(self._write_hold(change.hold))
        items.extend(self._write_lot(write) for write in change.lots)
        first_extra = len(items)
        items.extend(dict(extra) for extra in extra_items)
        with _store_call():
            try:
                self._client.transact_write_items(TransactItems=items)
            except ClientError as error:
                if error.response['Error']['Code'] != 'TransactionCanceledException':
                    raise
                raw = error.response.get('CancellationReasons', [])
                reasons = [reason.get('Code', 'None') for reason in raw]
                if any(code not in _RETRYABLE_REASONS for code in reasons):
                    raise  # ValidationError and the like: a bug, not contention
                failed = {i for i, code in enumerate(reasons) if code == 'ConditionalCheckFailed'}
                extra = next((i for i in sorted(failed) if i >= first_extra), None)
                new_hold = change.hold is not None and change.hold.before is None
                raise CommitRejected(
                    entry_exists=entry_at in failed or (new_hold and hold_at in failed),
                    account_exists=change.account_before is None and account_at in failed,
                    extra_index=None if extra is None else extra - first_extra,
                    extra_item=raw[extra].get('Item') if extra is not None else None,
                ) from None

    def _put_new(self, item: Item) -> Item:
        return {'Put': {'TableName': self.table_name, 'Item': item, 'ConditionExpression': 'attribute_not_exists(pk)'}}

    def _write_account(self, before: AccountState | None, after: AccountState) -> Item:
        if before is None:
            return self._put_new(account_to_item(after))
        # An update, not a put: attributes other modules may keep on the account item survive.
        item = account_to_item(after)
        names = ['available', 'held', 'owed', 'open_holds', 'v', 'updated_at']
        return {
            'Update': {
                'TableName': self.table_name,
                'Key': account_key(after.account_id),
                'UpdateExpression': 'SET ' + ', '.join(f'#{n} = :{n}' for n in names),
                'ConditionExpression': '#v = :expected',
                'ExpressionAttributeNames': {f'#{n}': n for n in names},
                'ExpressionAttributeValues': {**{f':{n}': item[n] for n in names}, ':expected': _n(before.version)},
            }
        }

    def _write_hold(self, write: HoldWrite) -> Item:
        if write.before is None:
            return self._put_new(hold_to_item(write.after))
        return {
            'Put': {
                'TableName': self.table_name,
                'Item': hold_to_item(write.after),
                'ConditionExpression': '#status = :open',
                'ExpressionAttributeNames': {'#status': 'status'},
                'ExpressionAttributeValues': {':open': _s(HoldStatus.OPEN.value)},
            }
        }

    def _write_lot(self, write: LotWrite) -> Item:
        if write.before is None:
            return self._put_new(lot_to_item(write.after, self._shards))
        return {
            'Put': {
                'TableName': self.table_name,
                'Item': lot_to_item(write.after, self._shards),
                'ConditionExpression': '#v = :expected',
                'ExpressionAttributeNames': {'#v': 'v'},
                'ExpressionAttributeValues': {':expected': _n(write.before.version)},
            }
        }

    # ------------------------------------------------------------ plumbing

    def _get(self, key: Item) -> Item | None:
        with _store_call():
            response = self._client.get_item(TableName=self.table_name, Key=key, ConsistentRead=True)
        item: Item | None = response.get('Item')
        return item

    def _query(self, *, limit: int | None = None, consistent: bool = True, **kwargs: Any) -> Iterator[Item]:
        kwargs = {'TableName': self.table_name, **kwargs}
        if consistent:
            kwargs['ConsistentRead'] = True
        returned = 0
        while True:
            if limit is not None:
                kwargs['Limit'] = limit - returned
            with _store_call():
                response = self._client.query(**kwargs)
            for item in response.get('Items', []):
                returned += 1
                yield item
            start = response.get('LastEvaluatedKey')
            if not start or (limit is not None and returned >= limit):
                return
            kwargs['ExclusiveStartKey'] = start


@contextmanager
def _store_call() -> Iterator[None]:
    """Turn transient DynamoDB failures into :class:`StoreUnavailable`; let anything else (a bug) through."""
    try:
        yield
    except ClientError as error:
        if error.response['Error']['Code'] in _TRANSIENT:
            raise StoreUnavailable(str(error)) from error
        raise
    except (BotoConnectionError, HTTPClientError) as error:
        raise StoreUnavailable(str(error)) from error


if TYPE_CHECKING:

    def _implements_the_port(store: DynamoDBLedgerStore) -> LedgerStore:
        return store  # mypy checks that the adapter matches the port
