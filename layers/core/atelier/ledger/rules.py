"""The ledger's rules as pure functions: from the state read and the request to the :class:`Change` to write.

No I/O here. Each ``plan_*`` function either raises a domain error (nothing to write) or returns the full
new state of every item the operation touches, with the versions it was planned from, so that the store
can apply it only if nothing moved in between.

Rules (see docs/ledger.md):

- Spending order: the soonest-expiring lot first; lots that never expire last; ties by creation time,
  then lot id. Expired lots are never spent, whether or not the expiry job has booked them out yet.
- A hold takes whole or partial lots in that order and remembers what it took from each (its legs).
  A capture spends the held credit in the same order; what is left of each leg goes back to its lot, unless
  that lot has expired meanwhile: then it is booked out as expired by the capture or release itself.
- A claw-back (or a negative adjustment) takes remaining credit from unexpired lots in spending order
  (a named source lot first); whatever no lot covers becomes ``owed`` and pushes ``available`` below zero.
  While an account owes, holds fail, and any credit that arrives (a grant, a released hold) pays what is
  owed before it lands in a lot.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from atelier.errors import InvalidInput
from atelier.ledger.errors import (
    CaptureExceedsHold,
    ConcurrencyLimitExceeded,
    CreditExpired,
    InsufficientCredits,
    InvalidAmount,
    TooManyLots,
)
from atelier.ledger.models import (
    EXPIRING_KINDS,
    MAX_AMOUNT,
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
)
from atelier.ledger.ports import Change, HoldWrite, LotWrite, StoredEntry

MAX_TRANSACT_ITEMS = 100
"""DynamoDB's limit of items in one TransactWriteItems."""
MAX_LEGS = 50
"""At most this many lots in one operation (a hold, a settlement or a claw-back)."""

_ID = re.compile(r'[\x21-\x7e]+')  # printable ASCII, no spaces
_MAX_TEXT = 500


# ---------------------------------------------------------------- validation


def check_amount(amount: object, *, name: str = 'amount', allow_negative: bool = False) -> int:
    """A whole, non-zero number of credits within :data:`MAX_AMOUNT` (positive unless ``allow_negative``).

    Raises
    ------
    InvalidAmount
        For anything else, including booleans and floats.
    """
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise InvalidAmount(f'{name} must be a whole number of credits', details={'field': name})
    if amount == 0 or abs(amount) > MAX_AMOUNT or (amount < 0 and not allow_negative):
        bound = f'-{MAX_AMOUNT}..-1 or 1..{MAX_AMOUNT}' if allow_negative else f'1..{MAX_AMOUNT}'
        raise InvalidAmount(f'{name} must be in {bound}, got {amount}', details={'field': name})
    return amount


def check_id(value: object, *, name: str, max_length: int = 256) -> str:
    """A non-empty identifier of printable ASCII without spaces."""
    if not isinstance(value, str) or not 0 < len(value) <= max_length or not _ID.fullmatch(value):
        raise InvalidInput(
            f'{name} must be 1-{max_length} printable characters without spaces', details={'field': name}
        )
    return value


def check_text(value: object, *, name: str, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        raise InvalidInput(
            f'{name} must be a non-empty text of at most {_MAX_TEXT} characters', details={'field': name}
        )
    return value


def check_expiry(kind: LotKind, expires_at: datetime | None) -> None:
    """Subscription and promo credit expires; paid and adjustment credit never does."""
    if kind in EXPIRING_KINDS and expires_at is None:
        raise InvalidInput(f'{kind.value} credit needs expires_at', details={'field': 'expires_at'})
    if kind not in EXPIRING_KINDS and expires_at is not None:
        raise InvalidInput(f'{kind.value} credit does not expire', details={'field': 'expires_at'})
    if expires_at is not None and expires_at.tzinfo is None:
        raise InvalidInput('expires_at must be timezone-aware', details={'field': 'expires_at'})


def params(op: str, **values: Any) -> str:
    """Canonical parameters of an operation: a retry carries the same, a clash does not."""
    return json.dumps({'op': op, **values}, sort_keys=True, separators=(',', ':'))


def lot_id_for(business_id: str) -> str:
    """The id of the lot a grant creates: derived from its business id, so a retry names the same lot."""
    return hashlib.sha256(business_id.encode()).hexdigest()[:20]


# ---------------------------------------------------------------- ordering


def spend_order_key(lot: LotState) -> tuple[bool, str, str, str]:
    """Soonest expiry first, never-expiring last, then oldest, then lot id."""
    expiry = format_ts(lot.expires_at) if lot.expires_at is not None else ''
    return (lot.expires_at is None, expiry, format_ts(lot.created_at), lot.lot_id)


def spendable_lots(lots: Iterable[LotState], now: datetime) -> list[LotState]:
    """Lots that a new hold may take from, in spending order: unexpired, with remaining credit."""
    return sorted((lot for lot in lots if lot.remaining > 0 and not lot.is_expired(now)), key=spend_order_key)


def spendable_amount(lots: Iterable[LotState], now: datetime) -> int:
    return sum(lot.remaining for lot in spendable_lots(lots, now))


# ---------------------------------------------------------------- plans


def _entry(
    account: AccountState,
    business_id: str,
    kind: EntryKind,
    amount: int,
    now: datetime,
    op_params: str,
    *,
    legs: Sequence[Leg] = (),
    held_delta: int = 0,
    **extra: Any,
) -> StoredEntry:
    lots = {leg.lot_id for leg in legs}
    entry = Entry(
        id=business_id,
        account_id=account.account_id,
        seq=account.version + 1,  # every entry comes with the account's next version
        kind=kind,
        amount=amount,
        held_delta=held_delta,
        lot=next(iter(lots)) if len(lots) == 1 else None,
        legs=tuple(legs),
        created_at=now,
        **extra,
    )
    return StoredEntry(entry=entry, params=op_params)


def _touch(
    account: AccountState,
    now: datetime,
    *,
    available: int | None = None,
    held: int | None = None,
    owed: int | None = None,
    open_holds: int | None = None,
) -> AccountState:
    """The account after a change: new balances, next version."""
    return replace(
        account,
        available=account.available if available is None else available,
        held=account.held if held is None else held,
        owed=account.owed if owed is None else owed,
        open_holds=account.open_holds if open_holds is None else open_holds,
        version=account.version + 1,
        updated_at=now,
    )


def new_account(account_id: str, plan: str, now: datetime) -> AccountState:
    return AccountState(
        account_id=account_id,
        plan=plan,
        available=0,
        held=0,
        owed=0,
        open_holds=0,
        version=0,
        created_at=now,
        updated_at=now,
    )


def plan_grant(
    account: AccountState,
    *,
    amount: int,
    kind: LotKind,
    business_id: str,
    expires_at: datetime | None,
    now: datetime,
    op_params: str,
    entry_kind: EntryKind = EntryKind.GRANT,
    reference: str | None = None,
    actor: str | None = None,
) -> Change:
    """New credit in a new lot; what the account owes is paid from it first.

    Raises
    ------
    CreditExpired
        If expiring credit is already expired.
    """
    if expires_at is not None and expires_at <= now:
        raise CreditExpired('the credit would already be expired', details={'field': 'expires_at'})
    lot_id = lot_id_for(business_id)
    repaid = min(amount, account.owed)
    lot = LotState(
        account_id=account.account_id,
        lot_id=lot_id,
        kind=kind,
        source=business_id,
        granted=amount,
        remaining=amount - repaid,
        held=0,
        used=repaid,
        expired=0,
        clawed=0,
        expires_at=expires_at,
        created_at=now,
        expiry_booked_at=None,
        version=1,
    )
    legs = [Leg(lot_id=lot_id, amount=amount, effect=LegEffect.GRANT)]
    if repaid:
        legs.append(Leg(lot_id=lot_id, amount=repaid, effect=LegEffect.REPAY))
    after = _touch(account, now, available=account.available + amount, owed=account.owed - repaid)
    entry = _entry(
        account,
        business_id,
        entry_kind,
        amount,
        now,
        op_params,
        legs=legs,
        repaid=repaid,
        reference=reference,
        actor=actor,
    )
    return Change(entry=entry, account_before=account, account_after=after, lots=(LotWrite(None, lot),))


def plan_hold(
    account: AccountState,
    lots: Iterable[LotState],
    *,
    task_id: str,
    amount: int,
    now: datetime,
    op_params: str,
    max_open_holds: int | None = None,
    max_legs: int = MAX_LEGS,
) -> Change:
    """Reserve ``amount`` for a task from the soonest-expiring spendable lots.

    Raises
    ------
    InsufficientCredits
        If the account owes credit, or its spendable (unexpired) credit is less than ``amount``.
    ConcurrencyLimitExceeded
        If the account already has ``max_open_holds`` open holds.
    TooManyLots
        If covering ``amount`` would take more than ``max_legs`` lots.
    """
    candidates = spendable_lots(lots, now)
    spendable = sum(lot.remaining for lot in candidates)
    if account.owed > 0 or min(account.available, spendable) < amount:
        raise InsufficientCredits(
            f'{amount} credits needed, {max(0, min(account.available, spendable))} available',
            details={'required': amount, 'available': max(0, min(account.available, spendable))},
        )
    if max_open_holds is not None and account.open_holds >= max_open_holds:
        raise ConcurrencyLimitExceeded(
            f'at most {max_open_holds} tasks may run at once', details={'limit': max_open_holds}
        )
    legs: list[Leg] = []
    writes: list[LotWrite] = []
    need = amount
    for lot in candidates:
        if need == 0:
            break
        take = min(lot.remaining, need)
        need -= take
        legs.append(Leg(lot_id=lot.lot_id, amount=take, effect=LegEffect.TAKE))
        writes.append(
            LotWrite(lot, replace(lot, remaining=lot.remaining - take, held=lot.held + take, version=lot.version + 1))
        )
    if len(legs) > max_legs:
        raise TooManyLots(f'the hold would span {len(legs)} lots (at most {max_legs})')
    business_id = hold_id(task_id)
    hold = HoldState(
        account_id=account.account_id,
        task_id=task_id,
        amount=amount,
        legs=tuple(legs),
        status=HoldStatus.OPEN,
        created_at=now,
    )
    after = _touch(
        account,
        now,
        available=account.available - amount,
        held=account.held + amount,
        open_holds=account.open_holds + 1,
    )
    entry = _entry(
        account, business_id, EntryKind.HOLD, -amount, now, op_params, legs=legs, held_delta=amount, task_id=task_id
    )
    return Change(
        entry=entry, account_before=account, account_after=after, hold=HoldWrite(None, hold), lots=tuple(writes)
    )


def plan_settle(
    account: AccountState,
    lots: Mapping[str, LotState],
    hold: HoldState,
    *,
    capture: int,
    now: datetime,
    op_params: str,
) -> Change:
    """Close an open hold: spend ``capture`` (0 releases it) and give the rest back to its lots.

    The captured credit is spent from the hold's legs in the order they were taken (soonest expiry first),
    so what goes back lands in the longest-lived lots. Credit going back to a lot that has expired since the
    hold is booked out as expired instead; credit going back while the account owes pays that first.

    Raises
    ------
    CaptureExceedsHold
        If ``capture`` is more than the hold.
    """
    if capture > hold.amount:
        raise CaptureExceedsHold(
            f'cannot capture {capture}: the hold is {hold.amount}', details={'held': hold.amount, 'capture': capture}
        )
    kind = EntryKind.CAPTURE if capture else EntryKind.RELEASE
    left = capture
    owed = account.owed
    released = expired = repaid = 0
    legs: list[Leg] = []
    writes: list[LotWrite] = []
    for leg in hold.legs:
        lot = lots[leg.lot_id]
        spent = min(leg.amount, left)
        left -= spent
        back = leg.amount - spent
        new = replace(lot, held=lot.held - leg.amount, used=lot.used + spent, version=lot.version + 1)
        if spent:
            legs.append(Leg(lot_id=lot.lot_id, amount=spent, effect=LegEffect.CONSUME))
        if back and lot.is_expired(now):
            new = replace(new, expired=new.expired + back)
            expired += back
            legs.append(Leg(lot_id=lot.lot_id, amount=back, effect=LegEffect.EXPIRE))
        elif back:
            repay = min(back, owed)
            owed -= repay
            repaid += repay
            released += back
            new = replace(new, remaining=new.remaining + back - repay, used=new.used + repay)
            if back - repay:
                legs.append(Leg(lot_id=lot.lot_id, amount=back - repay, effect=LegEffect.RETURN))
            if repay:
                legs.append(Leg(lot_id=lot.lot_id, amount=repay, effect=LegEffect.REPAY))
        writes.append(LotWrite(lot, new))
    closed = replace(hold, status=HoldStatus.CAPTURED if capture else HoldStatus.RELEASED, closed_at=now)
    after = _touch(
        account,
        now,
        available=account.available + released,
        held=account.held - hold.amount,
        owed=owed,
        open_holds=account.open_holds - 1,
    )
    business_id = capture_id(hold.task_id) if capture else release_id(hold.task_id)
    entry = _entry(
        account,
        business_id,
        kind,
        released,
        now,
        op_params,
        legs=legs,
        held_delta=-hold.amount,
        task_id=hold.task_id,
        captured=capture,
        expired=expired,
        repaid=repaid,
    )
    return Change(
        entry=entry, account_before=account, account_after=after, hold=HoldWrite(hold, closed), lots=tuple(writes)
    )


def plan_debit(
    account: AccountState,
    lots: Iterable[LotState],
    *,
    amount: int,
    business_id: str,
    kind: EntryKind,
    now: datetime,
    op_params: str,
    reference: str | None = None,
    actor: str | None = None,
    source_lot_id: str | None = None,
    max_legs: int = MAX_LEGS,
) -> Change:
    """Take ``amount`` back (claw-back, negative adjustment): from unexpired lots' remaining credit in spending
    order (``source_lot_id`` first), and the rest as owed credit, which may push ``available`` below zero.

    Held credit is left alone: open holds still settle normally.
    """
    candidates = spendable_lots(lots, now)
    candidates.sort(key=lambda lot: lot.lot_id != source_lot_id)  # stable: the source lot first
    legs: list[Leg] = []
    writes: list[LotWrite] = []
    need = amount
    for lot in candidates:
        if need == 0:
            break
        take = min(lot.remaining, need)
        need -= take
        legs.append(Leg(lot_id=lot.lot_id, amount=take, effect=LegEffect.CLAW))
        writes.append(
            LotWrite(
                lot, replace(lot, remaining=lot.remaining - take, clawed=lot.clawed + take, version=lot.version + 1)
            )
        )
    if len(legs) > max_legs:
        raise TooManyLots(f'the debit would span {len(legs)} lots (at most {max_legs})')
    after = _touch(account, now, available=account.available - amount, owed=account.owed + need)
    entry = _entry(account, business_id, kind, -amount, now, op_params, legs=legs, reference=reference, actor=actor)
    return Change(entry=entry, account_before=account, account_after=after, lots=tuple(writes))


def plan_expire(account: AccountState, lot: LotState, now: datetime) -> Change | None:
    """Book out the unused credit of a lot whose expiry has passed (None if not due or already booked).

    Credit of the lot that is held stays with its hold (a capture may still spend it); whatever of it comes
    back later is booked out as expired by that capture or release.
    """
    if lot.expiry_booked_at is not None or lot.expires_at is None or lot.expires_at > now:
        return None
    left = lot.remaining
    new = replace(lot, remaining=0, expired=lot.expired + left, expiry_booked_at=now, version=lot.version + 1)
    if left == 0:
        return Change(entry=None, account_before=None, account_after=None, lots=(LotWrite(lot, new),))
    legs = [Leg(lot_id=lot.lot_id, amount=left, effect=LegEffect.EXPIRE)]
    entry = _entry(account, expire_id(lot.lot_id), EntryKind.EXPIRE, -left, now, params('expire'), legs=legs)
    after = _touch(account, now, available=account.available - left)
    return Change(entry=entry, account_before=account, account_after=after, lots=(LotWrite(lot, new),))


# ---------------------------------------------------------------- business ids


def hold_id(task_id: str) -> str:
    return f'task:{task_id}:hold'


def capture_id(task_id: str) -> str:
    return f'task:{task_id}:capture'


def release_id(task_id: str) -> str:
    return f'task:{task_id}:release'


def expire_id(lot_id: str) -> str:
    return f'expire:{lot_id}'
