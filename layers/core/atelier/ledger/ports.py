"""The ledger's store port: what the service needs from storage, and what one operation writes.

A :class:`Change` is everything one ledger operation writes, applied in ONE transaction together with the
caller's ``extra_items``, or not at all. The store checks, in that same transaction, that nothing it was
planned from has moved (account and lot versions, the hold still open) and that the entry's business id
is new. When it rejects a change it says why with :class:`CommitRejected`; the service then re-reads and
either replays the stored entry, reports the caller's failed item, or tries again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from atelier.ledger.models import AccountState, Entry, HoldState, LotState


@dataclass(frozen=True)
class StoredEntry:
    """An entry with the canonical parameters of the operation that wrote it (to tell a retry from a clash)."""

    entry: Entry
    params: str


@dataclass(frozen=True)
class LotWrite:
    before: LotState | None  # None: the lot is new
    after: LotState


@dataclass(frozen=True)
class HoldWrite:
    before: HoldState | None  # None: the hold is new
    after: HoldState


@dataclass(frozen=True)
class Change:
    """What one operation writes. ``account_before is None`` with an ``account_after`` creates the account."""

    entry: StoredEntry | None
    account_before: AccountState | None
    account_after: AccountState | None
    hold: HoldWrite | None = None
    lots: tuple[LotWrite, ...] = ()

    @property
    def item_count(self) -> int:
        return (self.entry is not None) + (self.account_after is not None) + (self.hold is not None) + len(self.lots)


EntryPosition = tuple[int, str]
"""Where a listing stands: (seq, business id) of the last entry returned."""


class CommitRejected(Exception):
    """The transaction was cancelled; nothing was written.

    ``entry_exists``: the business id is already booked (or the hold for this task already exists).
    ``account_exists``: the account to create exists. ``extra_index``/``extra_item``: the first of the
    caller's extra items whose condition failed. Anything else (a version moved, a transaction conflict,
    throttling) leaves all of them unset: re-read and try again.
    """

    def __init__(
        self,
        *,
        entry_exists: bool = False,
        account_exists: bool = False,
        extra_index: int | None = None,
        extra_item: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            f'commit rejected (entry_exists={entry_exists}, account_exists={account_exists}, extra_index={extra_index})'
        )
        self.entry_exists = entry_exists
        self.account_exists = account_exists
        self.extra_index = extra_index
        self.extra_item = extra_item


class StoreUnavailable(Exception):
    """A transient store failure. For a commit the outcome is unknown: it may have been applied."""


class LedgerStore(Protocol):
    """Storage of accounts, lots, holds and entries. Reads are strongly consistent unless noted."""

    def load_account(self, account_id: str) -> AccountState | None:
        """The account, or None."""
        ...

    def load_account_isolated(self, account_id: str) -> AccountState | None:
        """The account, or None, read in isolation from transactions: never while one that writes it is in flight.

        Raises :class:`StoreUnavailable` when a transaction writing the account has not finished yet (read
        again later), as well as on a transient failure.
        """
        ...

    def load_lots(self, account_id: str, *, open_only: bool = True) -> list[LotState]:
        """The account's lots (only those with remaining or held credit when ``open_only``), any order."""
        ...

    def load_lot(self, account_id: str, lot_id: str) -> LotState | None:
        """One lot, or None."""
        ...

    def load_hold(self, account_id: str, task_id: str) -> HoldState | None:
        """The hold of a task, or None."""
        ...

    def load_holds(self, account_id: str, *, open_only: bool = True) -> list[HoldState]:
        """The account's holds (only open ones when ``open_only``)."""
        ...

    def load_entry(self, account_id: str, business_id: str) -> StoredEntry | None:
        """The entry booked under a business id, or None."""
        ...

    def query_entries(self, account_id: str, *, limit: int, after: EntryPosition | None = None) -> list[Entry]:
        """Up to ``limit`` entries, newest first, starting after ``after``."""
        ...

    def due_lots(self, now: datetime) -> Iterator[tuple[str, str]]:
        """(account id, lot id) of lots whose expiry is at or before ``now`` and not yet booked out.

        May lag behind writes (it reads an index); callers re-read each lot before acting.
        """
        ...

    def account_ids(self) -> Iterator[str]:
        """Every account id (a full scan: for ops jobs such as reconciliation, never on a request path)."""
        ...

    def set_plan(self, account_id: str, plan: str, now: datetime) -> bool:
        """Store the account's plan; False if there is no such account. Balances are not touched."""
        ...

    def commit(self, change: Change, extra_items: Sequence[Mapping[str, Any]] = ()) -> None:
        """Write the change and the extra items in one transaction.

        Raises :class:`CommitRejected` when any condition fails, :class:`StoreUnavailable` on a transient
        failure (outcome unknown).
        """
        ...
