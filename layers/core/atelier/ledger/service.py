"""The credit ledger service: idempotent operations over a :class:`~atelier.ledger.ports.LedgerStore`.

Every operation follows the same loop: read the state, plan the change with the pure rules
(:mod:`atelier.ledger.rules`), and commit it in one transaction guarded by the versions it read and by
``attribute_not_exists`` on the entry's business id. When the commit is rejected or its answer is lost,
the loop looks for the entry first: if it is there, the operation was already applied and its stored result
is returned (or :class:`~atelier.ledger.errors.IdempotencyConflict` if the parameters differ). Otherwise
it reports the caller's failed extra item, or re-reads and tries again after a jittered backoff.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from atelier.errors import DomainError, InvalidInput
from atelier.ledger import rules
from atelier.ledger.errors import (
    AccountNotFound,
    ExtraItemConditionFailed,
    HoldClosed,
    HoldNotFound,
    IdempotencyConflict,
    InvalidCursor,
    LedgerUnavailable,
    TooManyLots,
)
from atelier.ledger.models import (
    Account,
    AccountState,
    Entry,
    EntryKind,
    EntryPage,
    GrantSpec,
    Hold,
    HoldStatus,
    LotKind,
    LotState,
    Reconciliation,
    Settlement,
    format_ts,
)
from atelier.ledger.ports import Change, CommitRejected, EntryPosition, LedgerStore, StoredEntry, StoreUnavailable

T = TypeVar('T')
Clock = Callable[[], datetime]

MAX_PAGE = 100
_LEDGER_ITEMS_MAX = 3  # entry + account + hold, besides the lots
_DEFAULT_CURSOR_KEY = b'atelier-ledger-cursor-v1'


def utc_now() -> datetime:
    return datetime.now(UTC)


class _Retry(Exception):
    """Internal: the state moved under us; read again."""


class Ledger:
    """Credit accounts, lots, holds and their append-only ledger.

    Parameters
    ----------
    store
        Where accounts, lots, holds and entries live (:class:`~atelier.ledger.dynamodb.DynamoDBLedgerStore`).
    clock
        Current time; injectable so that expiry can be tested.
    cursor_key
        Secret that signs listing cursors (so a client cannot forge or alter one), or how to fetch it: a
        callable is called once, when a cursor is first signed or checked, so that a function that never
        lists entries never reads the secret.
    max_attempts
        How often one call re-reads and retries under contention before giving up with
        :class:`~atelier.ledger.errors.LedgerUnavailable`.
    reconcile_attempts
        How often :meth:`reconcile` reads an account that keeps changing before giving up.
    recheck_delay
        How long :meth:`reconcile` waits before it reads a mismatched account again to confirm the mismatch.
    """

    def __init__(
        self,
        store: LedgerStore,
        *,
        clock: Clock = utc_now,
        cursor_key: bytes | Callable[[], bytes] = _DEFAULT_CURSOR_KEY,
        max_attempts: int = 100,
        backoff_base: float = 0.005,
        backoff_cap: float = 0.05,
        reconcile_attempts: int = 10,
        recheck_delay: float = 0.1,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._clock = clock
        self._cursor_key_source = cursor_key
        self._cursor_key: bytes | None = cursor_key if isinstance(cursor_key, bytes) else None
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._reconcile_attempts = reconcile_attempts
        self._recheck_delay = recheck_delay
        self._sleep = sleep
        self._random = random.Random()

    # ------------------------------------------------------------ accounts

    def open_account(
        self,
        account_id: str,
        *,
        plan: str = 'free',
        welcome: GrantSpec | None = None,
        extra_items: Sequence[Mapping[str, Any]] = (),
    ) -> Account:
        """Create an account (with its welcome grant) in one transaction; return it if it exists already.

        An existing account is returned as it is (its plan is not changed); a welcome grant it lacks is
        granted (exactly once, by its business id). ``extra_items`` are written only with a new account.

        Raises
        ------
        ExtraItemConditionFailed
            If one of ``extra_items``' conditions failed (nothing was written).
        """
        rules.check_id(account_id, name='account_id', max_length=128)
        rules.check_id(plan, name='plan', max_length=64)
        if welcome is not None:
            self._check_grant(welcome.amount, welcome.kind, welcome.business_id, welcome.expires_at, welcome.memo)

        def attempt() -> Account:
            existing = self._store.load_account(account_id)
            if existing is not None:
                if welcome is not None:
                    self.grant(
                        account_id,
                        amount=welcome.amount,
                        kind=welcome.kind,
                        business_id=welcome.business_id,
                        expires_at=welcome.expires_at,
                        memo=welcome.memo,
                    )
                    return self.get_account(account_id)
                return existing.public()
            now = self._clock()
            account = rules.new_account(account_id, plan, now)
            change = Change(entry=None, account_before=None, account_after=account)
            if welcome is not None:
                grant = rules.plan_grant(
                    account,
                    amount=welcome.amount,
                    kind=welcome.kind,
                    business_id=welcome.business_id,
                    expires_at=welcome.expires_at,
                    now=now,
                    op_params=self._grant_params(welcome.amount, welcome.kind, welcome.expires_at),
                    reference=welcome.memo,
                )
                change = Change(
                    entry=grant.entry, account_before=None, account_after=grant.account_after, lots=grant.lots
                )
            self._check_size(change, extra_items)
            try:
                self._store.commit(change, extra_items)
            except CommitRejected as rejected:
                if rejected.account_exists:
                    raise _Retry from None  # someone opened it meanwhile: the next attempt returns it
                if rejected.extra_index is not None:
                    raise ExtraItemConditionFailed(rejected.extra_index, rejected.extra_item) from None
                raise _Retry from None
            assert change.account_after is not None
            return change.account_after.public()

        return self._run(attempt)

    def set_plan(self, account_id: str, plan: str) -> Account:
        """Change the account's plan (which decides its limits); balances and entries are not touched.

        Raises
        ------
        AccountNotFound
        """
        rules.check_id(account_id, name='account_id', max_length=128)
        rules.check_id(plan, name='plan', max_length=64)
        if not self._guarded(lambda: self._store.set_plan(account_id, plan, self._clock())):
            raise AccountNotFound(f'no account {account_id}', details={'account_id': account_id})
        return self.get_account(account_id)

    def get_account(self, account_id: str) -> Account:
        """The account's balances.

        Raises
        ------
        AccountNotFound
        """
        return self._account(account_id).public()

    # ------------------------------------------------------------ credit in and out

    def grant(
        self,
        account_id: str,
        *,
        amount: int,
        kind: LotKind,
        business_id: str,
        expires_at: datetime | None = None,
        memo: str | None = None,
    ) -> Entry:
        """Add credit as a new lot, exactly once per ``business_id``.

        Paid (and adjustment) credit never expires; subscription and promo credit needs ``expires_at``.
        If the account owes credit after a claw-back, the grant pays that first.

        Raises
        ------
        InvalidAmount, InvalidInput, AccountNotFound
        IdempotencyConflict
            If ``business_id`` was already applied with another amount, kind or expiry.
        """
        kind = LotKind(kind)
        self._check_grant(amount, kind, business_id, expires_at, memo)
        rules.check_id(account_id, name='account_id', max_length=128)
        op_params = self._grant_params(amount, kind, expires_at)

        def plan(account: AccountState, now: datetime) -> Change:
            return rules.plan_grant(
                account,
                amount=amount,
                kind=kind,
                business_id=business_id,
                expires_at=expires_at,
                now=now,
                op_params=op_params,
                reference=memo,
            )

        return self._apply(account_id, business_id, op_params, plan, _entry_of)

    def claw_back(
        self,
        account_id: str,
        *,
        amount: int,
        business_id: str,
        reason: str,
        source: str | None = None,
    ) -> Entry:
        """Take credit back after a refund or chargeback, exactly once per ``business_id``.

        Takes unexpired remaining credit in spending order (the lot granted under the business id
        ``source`` first, e.g. the refunded purchase); what no lot covers is owed, and ``available`` goes
        below zero. An account that owes cannot start new holds until credit arrives.

        Raises
        ------
        InvalidAmount, InvalidInput, AccountNotFound, IdempotencyConflict
        """
        rules.check_amount(amount)
        rules.check_id(business_id, name='business_id')
        rules.check_text(reason, name='reason', required=True)
        if source is not None:
            rules.check_id(source, name='source')
        op_params = rules.params('claw_back', amount=amount, source=source)
        source_lot = rules.lot_id_for(source) if source is not None else None

        def plan(account: AccountState, now: datetime) -> Change:
            return rules.plan_debit(
                account,
                self._store.load_lots(account.account_id),
                amount=amount,
                business_id=business_id,
                kind=EntryKind.CLAW_BACK,
                now=now,
                op_params=op_params,
                reference=reason,
                source_lot_id=source_lot,
            )

        return self._apply(account_id, business_id, op_params, plan, _entry_of)

    def adjust(self, account_id: str, *, amount: int, business_id: str, reason: str, actor: str) -> Entry:
        """An ops correction, exactly once per ``business_id``.

        A positive amount adds a never-expiring ``adjustment`` lot (paying owed credit first); a negative
        one takes credit like a claw-back and may push ``available`` below zero.

        Raises
        ------
        InvalidAmount, InvalidInput, AccountNotFound, IdempotencyConflict
        """
        rules.check_amount(amount, allow_negative=True)
        rules.check_id(business_id, name='business_id')
        rules.check_text(reason, name='reason', required=True)
        rules.check_text(actor, name='actor', required=True)
        op_params = rules.params('adjust', amount=amount)

        def plan(account: AccountState, now: datetime) -> Change:
            if amount > 0:
                return rules.plan_grant(
                    account,
                    amount=amount,
                    kind=LotKind.ADJUSTMENT,
                    business_id=business_id,
                    expires_at=None,
                    now=now,
                    op_params=op_params,
                    entry_kind=EntryKind.ADJUST,
                    reference=reason,
                    actor=actor,
                )
            return rules.plan_debit(
                account,
                self._store.load_lots(account.account_id),
                amount=-amount,
                business_id=business_id,
                kind=EntryKind.ADJUST,
                now=now,
                op_params=op_params,
                reference=reason,
                actor=actor,
            )

        return self._apply(account_id, business_id, op_params, plan, _entry_of)

    # ------------------------------------------------------------ holds

    def hold(
        self,
        account_id: str,
        *,
        task_id: str,
        amount: int,
        max_open_holds: int | None = None,
        extra_items: Sequence[Mapping[str, Any]] = (),
    ) -> Hold:
        """Reserve credit for a task (business id ``task:{task_id}:hold``), exactly once per task.

        ``extra_items`` (low-level TransactWriteItems entries, e.g. the task item) are written in the same
        transaction. A repeated call returns the first hold, even if the balance has changed since.
        A failed hold is not remembered: the same task may be held again once credit is there.

        Raises
        ------
        InsufficientCredits
            The account owes credit, or has less unexpired credit than ``amount``.
        ConcurrencyLimitExceeded
            The account already has ``max_open_holds`` open holds.
        ExtraItemConditionFailed
            One of ``extra_items``' conditions failed (nothing was written).
        InvalidAmount, InvalidInput, AccountNotFound, IdempotencyConflict
        """
        rules.check_id(task_id, name='task_id', max_length=128)
        rules.check_amount(amount)
        if max_open_holds is not None and (isinstance(max_open_holds, bool) or max_open_holds < 0):
            raise InvalidInput('max_open_holds must be zero or more', details={'field': 'max_open_holds'})
        business_id = rules.hold_id(task_id)
        op_params = rules.params('hold', amount=amount)
        max_legs = min(rules.MAX_LEGS, rules.MAX_TRANSACT_ITEMS - _LEDGER_ITEMS_MAX - len(extra_items))

        def plan(account: AccountState, now: datetime) -> Change:
            return rules.plan_hold(
                account,
                self._store.load_lots(account.account_id),
                task_id=task_id,
                amount=amount,
                now=now,
                op_params=op_params,
                max_open_holds=max_open_holds,
                max_legs=max_legs,
            )

        return self._apply(account_id, business_id, op_params, plan, _hold_of, extra_items)

    def capture(self, account_id: str, *, task_id: str, amount: int) -> Settlement:
        """Spend ``amount`` of a task's hold (at most the hold) and give the rest back; closes the hold.

        Raises
        ------
        CaptureExceedsHold
        HoldNotFound
            No hold for this task.
        HoldClosed
            The hold was released.
        InvalidAmount, InvalidInput, IdempotencyConflict
        """
        rules.check_amount(amount)
        return self._settle(account_id, task_id, amount)

    def release(self, account_id: str, *, task_id: str) -> Settlement:
        """Give a task's whole hold back to the lots it came from; closes the hold.

        Raises
        ------
        HoldNotFound
            No hold for this task.
        HoldClosed
            The hold was captured.
        """
        return self._settle(account_id, task_id, 0)

    def _settle(self, account_id: str, task_id: str, capture: int) -> Settlement:
        rules.check_id(account_id, name='account_id', max_length=128)
        rules.check_id(task_id, name='task_id', max_length=128)
        if capture:
            business_id, op_params = rules.capture_id(task_id), rules.params('capture', amount=capture)
        else:
            business_id, op_params = rules.release_id(task_id), rules.params('release')

        def plan(account: AccountState, now: datetime) -> Change:
            hold = self._store.load_hold(account_id, task_id)
            if hold is None:
                raise HoldNotFound(f'no hold for task {task_id}', details={'task_id': task_id})
            if hold.status is not HoldStatus.OPEN:
                raise HoldClosed(
                    f'the hold of task {task_id} is already {hold.status.value}', details={'task_id': task_id}
                )
            lots = {lot.lot_id: lot for lot in self._store.load_lots(account_id)}
            missing = {leg.lot_id for leg in hold.legs} - lots.keys()
            if missing:  # an open hold's lots are open: we read across a concurrent change
                raise _Retry
            return rules.plan_settle(account, lots, hold, capture=capture, now=now, op_params=op_params)

        return self._apply(account_id, business_id, op_params, plan, _settlement_of)

    # ------------------------------------------------------------ expiry

    def expire(self, now: datetime, *, limit: int | None = None) -> list[Entry]:
        """Book out the unused credit of every lot whose expiry is at or before ``now`` (the scheduled job).

        Safe to run concurrently and repeatedly: each lot is booked out once (business id
        ``expire:{lot_id}``). Held credit of an expired lot stays with its hold; a hold never spends
        expired credit it did not take before the expiry. Returns the entries this call wrote.
        """
        written: list[Entry] = []
        due = self._guarded(lambda: list(self._store.due_lots(now)))
        for account_id, lot_id in due[:limit]:
            entry = self._run(functools.partial(self._expire_lot, account_id, lot_id, now))
            if entry is not None:
                written.append(entry)
        return written

    def _expire_lot(self, account_id: str, lot_id: str, now: datetime) -> Entry | None:
        account = self._store.load_account(account_id)
        lot = self._store.load_lot(account_id, lot_id)
        if account is None or lot is None:
            return None
        change = rules.plan_expire(account, lot, now)
        if change is None:
            return None
        try:
            self._store.commit(change)
        except CommitRejected as rejected:
            if rejected.entry_exists:
                return None  # booked by a concurrent run
            raise _Retry from None
        return change.entry.entry if change.entry else None

    # ------------------------------------------------------------ reading

    def list_entries(self, account_id: str, *, limit: int = 50, cursor: str | None = None) -> EntryPage:
        """The account's entries, newest first, ``limit`` at a time; pass ``next_cursor`` for the next page.

        Raises
        ------
        InvalidCursor
            The cursor was not issued by this ledger for this account, or was altered.
        InvalidInput
            ``limit`` is not within 1..100.
        AccountNotFound
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f'limit must be within 1..{MAX_PAGE}', details={'field': 'limit'})
        position = self._decode_cursor(account_id, cursor) if cursor is not None else None
        self._account(account_id)
        items = self._guarded(lambda: self._store.query_entries(account_id, limit=limit + 1, after=position))
        next_cursor = None
        if len(items) > limit:
            items = items[:limit]
            last = items[-1]
            next_cursor = self._encode_cursor(account_id, (last.seq, last.id))
        return EntryPage(items=tuple(items), next_cursor=next_cursor)

    def list_lots(self, account_id: str, *, open_only: bool = True) -> list[LotState]:
        """The account's lots in spending order (for ops and reconciliation)."""
        lots = self._guarded(lambda: self._store.load_lots(account_id, open_only=open_only))
        return sorted(lots, key=rules.spend_order_key)

    def account_ids(self) -> Iterator[str]:
        """Every account id, for ops jobs (a full table scan)."""
        return self._store.account_ids()

    def reconcile(self, account_id: str) -> Reconciliation:
        """Add up the account's entries, lots and open holds next to its stored balances, from a consistent read.

        The result's ``ok`` is true when the balances equal the sums (the reconcile job alarms otherwise).
        Every ledger write bumps the account's version in its transaction, so one read is: the account, its
        entries, lots and open holds (strongly consistent queries), then the account again through a
        transactional read, which a write still in flight on the account cancels. The read counts only if
        the version is the same at both ends; otherwise it is read again after a jittered backoff. A query
        is read-committed item by item, so a read may still catch the last moments of a transaction's
        commit: a mismatch is returned only once a second read, ``recheck_delay`` later, finds the same
        version and still does not add up. The result's ``reads`` says how many reads it took.

        Raises
        ------
        AccountNotFound
        LedgerUnavailable
            The account kept changing (or the store kept failing) for ``reconcile_attempts`` reads; it was not
            checked, and checking it again later is safe.
        """
        rules.check_id(account_id, name='account_id', max_length=128)
        reads = 0
        mismatched_at: set[int] = set()  # versions at which a read did not add up

        def attempt() -> Reconciliation:
            nonlocal reads
            reads += 1
            report = self._read_reconciliation(account_id, reads=reads)
            if report.ok or report.account_version in mismatched_at:
                return report
            mismatched_at.add(report.account_version)
            self._sleep(self._recheck_delay)  # a commit the queries caught half-way is over by then
            raise _Retry

        return self._run(attempt, attempts=self._reconcile_attempts)

    def _read_reconciliation(self, account_id: str, *, reads: int) -> Reconciliation:
        """One read of the account and of what it must add up to; :class:`_Retry` if the account changed meanwhile.

        Raises StoreUnavailable if a write to the account was in flight at the end (or the store failed).
        """
        account = self._store.load_account(account_id)
        if account is None:
            raise AccountNotFound(f'no account {account_id}', details={'account_id': account_id})
        entries_count = entries_available = entries_held = 0
        position: EntryPosition | None = None
        while True:
            page = self._store.query_entries(account_id, limit=MAX_PAGE, after=position)
            entries_count += len(page)
            entries_available += sum(e.amount for e in page)
            entries_held += sum(e.held_delta for e in page)
            if len(page) < MAX_PAGE:
                break
            position = (page[-1].seq, page[-1].id)
        lots = self._store.load_lots(account_id, open_only=False)
        holds = self._store.load_holds(account_id, open_only=True)
        after = self._store.load_account_isolated(account_id)
        if after is None or after.version != account.version:
            raise _Retry
        return Reconciliation(
            account=account.public(),
            account_version=account.version,
            entries_count=entries_count,
            entries_available=entries_available,
            entries_held=entries_held,
            lots_available=sum(lot.remaining for lot in lots),
            lots_held=sum(lot.held for lot in lots),
            open_holds_held=sum(h.amount for h in holds),
            open_holds_count=len(holds),
            lots_consistent=all(lot.balanced for lot in lots),
            reads=reads,
        )

    # ------------------------------------------------------------ machinery

    def _apply(
        self,
        account_id: str,
        business_id: str,
        op_params: str,
        plan: Callable[[AccountState, datetime], Change],
        result: Callable[[Entry], T],
        extra_items: Sequence[Mapping[str, Any]] = (),
    ) -> T:
        rules.check_id(account_id, name='account_id', max_length=128)

        def attempt() -> T:
            account = self._store.load_account(account_id)
            if account is None:
                raise AccountNotFound(f'no account {account_id}', details={'account_id': account_id})
            try:
                change = plan(account, self._clock())
                self._check_size(change, extra_items)
            except DomainError:
                # A refusal based on the current state may just mean it was already applied.
                stored = self._store.load_entry(account_id, business_id)
                if stored is not None:
                    return self._replay(stored, op_params, result)
                raise
            try:
                self._store.commit(change, extra_items)
            except CommitRejected as rejected:
                stored = self._store.load_entry(account_id, business_id)
                if stored is not None:
                    return self._replay(stored, op_params, result)
                if rejected.extra_index is not None:
                    raise ExtraItemConditionFailed(rejected.extra_index, rejected.extra_item) from None
                raise _Retry from None
            assert change.entry is not None
            return result(change.entry.entry)

        return self._run(attempt)

    @staticmethod
    def _replay(stored: StoredEntry, op_params: str, result: Callable[[Entry], T]) -> T:
        if stored.params != op_params:
            raise IdempotencyConflict(
                f'{stored.entry.id} was already applied with other parameters',
                details={'business_id': stored.entry.id},
            )
        return result(stored.entry)

    def _run(self, attempt: Callable[[], T], *, attempts: int | None = None) -> T:
        for n in range(attempts or self._max_attempts):
            try:
                return attempt()
            except (_Retry, StoreUnavailable):
                # Full jitter: contenders spread out instead of colliding again in lockstep.
                self._sleep(self._random.uniform(0, min(self._backoff_cap, self._backoff_base * 2**n)))
        raise LedgerUnavailable('the ledger is busy; retry the same call')

    def _guarded(self, read: Callable[[], T]) -> T:
        return self._run(read)

    def _account(self, account_id: str) -> AccountState:
        rules.check_id(account_id, name='account_id', max_length=128)
        account = self._guarded(lambda: self._store.load_account(account_id))
        if account is None:
            raise AccountNotFound(f'no account {account_id}', details={'account_id': account_id})
        return account

    @staticmethod
    def _check_size(change: Change, extra_items: Sequence[Mapping[str, Any]]) -> None:
        if change.item_count + len(extra_items) > rules.MAX_TRANSACT_ITEMS:
            raise TooManyLots(
                f'{change.item_count} ledger items and {len(extra_items)} extra items exceed one transaction'
            )

    @staticmethod
    def _check_grant(
        amount: int, kind: LotKind, business_id: str, expires_at: datetime | None, memo: str | None
    ) -> None:
        rules.check_amount(amount)
        rules.check_id(business_id, name='business_id')
        rules.check_expiry(LotKind(kind), expires_at)
        rules.check_text(memo, name='memo')

    @staticmethod
    def _grant_params(amount: int, kind: LotKind, expires_at: datetime | None) -> str:
        expiry = format_ts(expires_at) if expires_at is not None else None
        return rules.params('grant', amount=amount, kind=LotKind(kind).value, expires_at=expiry)

    # ------------------------------------------------------------ cursors

    def _key(self) -> bytes:
        if self._cursor_key is None:
            assert callable(self._cursor_key_source)
            self._cursor_key = self._cursor_key_source()
        return self._cursor_key

    def _sign(self, account_id: str, payload: str) -> str:
        mac = hmac.new(self._key(), f'{account_id}\n{payload}'.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).decode().rstrip('=')

    def _encode_cursor(self, account_id: str, position: EntryPosition) -> str:
        raw = json.dumps({'seq': position[0], 'id': position[1]}, separators=(',', ':')).encode()
        payload = base64.urlsafe_b64encode(raw).decode().rstrip('=')
        return f'{payload}.{self._sign(account_id, payload)}'

    def _decode_cursor(self, account_id: str, cursor: str) -> EntryPosition:
        invalid = InvalidCursor('invalid cursor')
        if not isinstance(cursor, str) or cursor.count('.') != 1 or len(cursor) > 1024:
            raise invalid
        payload, signature = cursor.split('.')
        # Bytes, not str: compare_digest refuses non-ASCII strings, and a cursor is client input.
        if not hmac.compare_digest(signature.encode('utf-8'), self._sign(account_id, payload).encode('utf-8')):
            raise invalid
        try:
            data = json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))
            seq, business_id = data['seq'], data['id']
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise invalid from None
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1 or not isinstance(business_id, str):
            raise invalid
        return (seq, business_id)


# ---------------------------------------------------------------- results from entries


def _entry_of(entry: Entry) -> Entry:
    return entry


def _hold_of(entry: Entry) -> Hold:
    assert entry.task_id is not None
    return Hold(
        account_id=entry.account_id,
        task_id=entry.task_id,
        amount=entry.held_delta,
        legs=entry.legs,
        created_at=entry.created_at,
    )


def _settlement_of(entry: Entry) -> Settlement:
    assert entry.task_id is not None
    return Settlement(
        account_id=entry.account_id,
        task_id=entry.task_id,
        kind=entry.kind,
        held=-entry.held_delta,
        captured=entry.captured,
        released=entry.amount,
        expired=entry.expired,
        legs=entry.legs,
        created_at=entry.created_at,
    )
