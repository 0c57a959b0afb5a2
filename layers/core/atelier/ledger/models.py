"""Models of the credit ledger: what callers get back, and the stored state the rules work on.

Public results (:class:`Account`, :class:`Entry`, :class:`Hold`, :class:`Settlement`, :class:`EntryPage`)
are frozen pydantic models, ready to be returned by an API handler. The stored state
(:class:`AccountState`, :class:`LotState`, :class:`HoldState`) is plain frozen dataclasses that the rules
turn into new states; the store maps both to DynamoDB items.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

MAX_AMOUNT = 10_000_000
"""No single operation moves more credits than this (a sanity bound, not a business limit)."""

_TS_FORMAT = '%Y-%m-%dT%H:%M:%S.%fZ'


def format_ts(moment: datetime) -> str:
    """A fixed-width UTC timestamp whose string order is its time order (used in keys and conditions)."""
    if moment.tzinfo is None:
        raise ValueError('ledger timestamps must be timezone-aware')
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, _TS_FORMAT).replace(tzinfo=UTC)


class LotKind(StrEnum):
    """Where a lot of credit came from; decides whether it expires."""

    PAID = 'paid'  # a bought pack: never expires
    SUBSCRIPTION = 'subscription'  # a subscription period's credits: expire at the period's end
    PROMO = 'promo'  # a promotional grant: expires
    ADJUSTMENT = 'adjustment'  # credit added by ops (``Ledger.adjust``): never expires


EXPIRING_KINDS = frozenset({LotKind.SUBSCRIPTION, LotKind.PROMO})


class EntryKind(StrEnum):
    GRANT = 'grant'
    HOLD = 'hold'
    CAPTURE = 'capture'
    RELEASE = 'release'
    CLAW_BACK = 'claw_back'
    EXPIRE = 'expire'
    ADJUST = 'adjust'


class LegEffect(StrEnum):
    """What an entry did to one lot."""

    GRANT = 'grant'  # credit added to the lot
    TAKE = 'take'  # moved from the lot's remaining credit into a hold
    CONSUME = 'consume'  # held credit spent by a capture
    RETURN = 'return'  # held credit given back to the lot
    REPAY = 'repay'  # credit that would have landed in the lot paid what the account owed instead
    EXPIRE = 'expire'  # unused credit booked out because the lot expired
    CLAW = 'claw'  # remaining credit taken back by a claw-back or a negative adjustment


class HoldStatus(StrEnum):
    OPEN = 'open'
    CAPTURED = 'captured'
    RELEASED = 'released'


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra='forbid')


class Leg(_Frozen):
    lot_id: str
    amount: int = Field(ge=0)
    effect: LegEffect


class GrantSpec(_Frozen):
    """A grant to book together with something else (the welcome credits of a new account)."""

    amount: int
    kind: LotKind
    business_id: str
    expires_at: datetime | None = None
    memo: str | None = None


class Account(_Frozen):
    """An account's balances.

    ``available`` is spendable-or-owed credit (negative only after a claw-back), ``held`` is reserved by
    open holds, ``owed`` is the part of a claw-back that no lot could cover (paid back first by the next
    credit that arrives), ``open_holds`` counts holds not yet captured or released.
    """

    account_id: str
    plan: str
    available: int
    held: int
    owed: int
    open_holds: int
    created_at: datetime
    updated_at: datetime


class Entry(_Frozen):
    """One immutable ledger entry: one business event, applied exactly once.

    ``amount`` is the signed change of ``available`` and ``held_delta`` the change of ``held``; the account's
    balances are the sums of these over all its entries. ``seq`` numbers the account's entries 1, 2, 3, ...
    in the order they took effect (it is the account's version after the entry). ``lot`` names the lot when
    the entry touched exactly one; ``legs`` says what it did to each lot.
    """

    id: str
    account_id: str
    seq: int
    kind: EntryKind
    amount: int
    held_delta: int = 0
    lot: str | None = None
    legs: tuple[Leg, ...] = ()
    task_id: str | None = None
    reference: str | None = None
    actor: str | None = None
    captured: int = 0
    expired: int = 0
    repaid: int = 0
    created_at: datetime


class Hold(_Frozen):
    """Credits reserved for a task, and the lots they came from (in spending order)."""

    account_id: str
    task_id: str
    amount: int
    legs: tuple[Leg, ...]
    created_at: datetime


class Settlement(_Frozen):
    """How a hold was closed: ``captured`` spent, ``released`` back to available, ``expired`` booked out
    (held credit of a lot that expired meanwhile)."""

    account_id: str
    task_id: str
    kind: EntryKind
    held: int
    captured: int
    released: int
    expired: int
    legs: tuple[Leg, ...]
    created_at: datetime


class EntryPage(_Frozen):
    items: tuple[Entry, ...]
    next_cursor: str | None


class Reconciliation(_Frozen):
    """The stored balances next to what the entries, lots and holds add up to, as of ``account_version``.

    ``reads``: how many reads of the account it took (more than one when the account changed while it was
    read, or when a mismatch was read again to confirm it).
    """

    account: Account
    account_version: int
    entries_count: int
    entries_available: int
    entries_held: int
    lots_available: int
    lots_held: int
    open_holds_held: int
    open_holds_count: int
    lots_consistent: bool
    reads: int = 1

    @property
    def ok(self) -> bool:
        a = self.account
        return (
            a.available == self.entries_available
            and a.held == self.entries_held
            and a.available == self.lots_available - a.owed
            and a.held == self.lots_held == self.open_holds_held
            and a.open_holds == self.open_holds_count
            and self.entries_count == self.account_version
            and self.lots_consistent
        )


# ---------------------------------------------------------------- stored state


@dataclass(frozen=True)
class AccountState:
    account_id: str
    plan: str
    available: int
    held: int
    owed: int
    open_holds: int
    version: int
    created_at: datetime
    updated_at: datetime

    def public(self) -> Account:
        return Account(
            account_id=self.account_id,
            plan=self.plan,
            available=self.available,
            held=self.held,
            owed=self.owed,
            open_holds=self.open_holds,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


@dataclass(frozen=True)
class LotState:
    """A lot of credit. Always ``granted == remaining + held + used + expired + clawed``."""

    account_id: str
    lot_id: str
    kind: LotKind
    source: str  # business id of the grant that created it
    granted: int
    remaining: int  # spendable (unless expired)
    held: int  # reserved by open holds
    used: int  # captured, or paid towards what the account owed
    expired: int
    clawed: int
    expires_at: datetime | None
    created_at: datetime
    expiry_booked_at: datetime | None
    version: int

    @property
    def open(self) -> bool:
        return self.remaining > 0 or self.held > 0

    def is_expired(self, now: datetime) -> bool:
        return self.expiry_booked_at is not None or (self.expires_at is not None and self.expires_at <= now)

    @property
    def balanced(self) -> bool:
        parts = (self.remaining, self.held, self.used, self.expired, self.clawed)
        return min(parts) >= 0 and self.granted == sum(parts)


@dataclass(frozen=True)
class HoldState:
    account_id: str
    task_id: str
    amount: int
    legs: tuple[Leg, ...]
    status: HoldStatus
    created_at: datetime
    closed_at: datetime | None = None
