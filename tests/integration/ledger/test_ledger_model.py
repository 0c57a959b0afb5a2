"""Model-based test of the ledger (Hypothesis ``RuleBasedStateMachine``), on moto and on DynamoDB Local.

Random sequences of grants, holds, captures, releases, claw-backs, expiries (the clock moves), duplicate
deliveries, conflicting reuses of business ids and crashes after commit run against the real store and
against a small in-memory model written independently of the ledger's code. After every step the stored
account must match the model and the books must balance: balance == sum of entries, ``held`` == sum of
open holds, ``available`` >= 0 unless something was clawed back, each business id booked once.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from atelier.ledger import (
    ConcurrencyLimitExceeded,
    DynamoDBLedgerStore,
    HoldClosed,
    IdempotencyConflict,
    InsufficientCredits,
    Ledger,
    LotKind,
)
from tests.hypothesis_profiles import model_settings
from tests.integration.ledger.conftest import Backend, FakeClock
from tests.integration.ledger.test_ledger_crash import Crash, crash_after_commit

ACCOUNT = 'acct'


# ---------------------------------------------------------------- the model


@dataclass
class MLot:
    lot_id: str
    expires_at: datetime | None
    created_at: datetime
    remaining: int
    held: int = 0

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def order(self) -> tuple[bool, datetime, datetime, str]:
        return (self.expires_at is None, self.expires_at or self.created_at, self.created_at, self.lot_id)


@dataclass
class MHold:
    amount: int
    legs: list[tuple[str, int]]
    closed_by: str | None = None
    closed_amount: int = 0


@dataclass
class Model:
    """What the ledger should hold, computed the plain way."""

    available: int = 0
    held: int = 0
    owed: int = 0
    lots: dict[str, MLot] = field(default_factory=dict)
    holds: dict[str, MHold] = field(default_factory=dict)
    applied: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # business id -> its parameters
    clawed: bool = False

    @property
    def open_holds(self) -> int:
        return sum(1 for h in self.holds.values() if h.closed_by is None)

    def credit(self, lot: MLot | None, amount: int) -> None:
        """Credit arriving (grant, hold coming back): what is owed is paid first."""
        repay = min(amount, self.owed)
        self.owed -= repay
        if lot is not None:
            lot.remaining += amount - repay

    def spendable(self, now: datetime) -> list[MLot]:
        return sorted((lot for lot in self.lots.values() if lot.remaining and not lot.expired(now)), key=MLot.order)


def lot_id(business_id: str) -> str:
    return hashlib.sha256(business_id.encode()).hexdigest()[:20]


# ---------------------------------------------------------------- the machine


class LedgerMachine(RuleBasedStateMachine):
    backend: Backend  # set per test run by :func:`ledger_machine`

    def __init__(self) -> None:
        super().__init__()
        backend = self.backend
        self.clock = FakeClock()
        self.table = backend.new_table()
        self.ledger = Ledger(DynamoDBLedgerStore(backend.client, self.table), clock=self.clock, backoff_base=0.001)
        self.model = Model()

    @initialize(welcome=st.integers(0, 30), hours=st.integers(1, 24))
    def open_account(self, welcome: int, hours: int) -> None:
        self.ledger.open_account(ACCOUNT)
        self.next_id = 0
        if welcome:
            self.grant(welcome, LotKind.PROMO, hours)

    def fresh(self, prefix: str) -> str:
        self.next_id += 1
        return f'{prefix}{self.next_id}'

    def applied(self, prefix: str) -> list[str]:
        return sorted(b for b in self.model.applied if b.startswith(prefix))

    # ------------------------------------------------------------ grants

    @rule(
        amount=st.integers(1, 40),
        kind=st.sampled_from([LotKind.PAID, LotKind.PROMO, LotKind.SUBSCRIPTION]),
        hours=st.integers(1, 24),
    )
    def grant(self, amount: int, kind: LotKind, hours: int) -> None:
        business_id = self.fresh('grant:')
        expires_at = None if kind is LotKind.PAID else self.clock.now + timedelta(hours=hours)
        entry = self.ledger.grant(ACCOUNT, amount=amount, kind=kind, business_id=business_id, expires_at=expires_at)
        assert (entry.id, entry.amount) == (business_id, amount)
        self.model.applied[business_id] = (amount, kind, expires_at)
        lot = MLot(lot_id(business_id), expires_at, self.clock.now, 0)
        self.model.lots[lot.lot_id] = lot
        self.model.available += amount
        self.model.credit(lot, amount)

    @precondition(lambda self: self.applied('grant:'))
    @rule(data=st.data(), other_amount=st.integers(1, 40))
    def redeliver_grant(self, data: st.DataObject, other_amount: int) -> None:
        # The same webhook again (no effect), or its business id reused for another amount (a conflict).
        business_id = data.draw(st.sampled_from(self.applied('grant:')))
        amount, kind, expires_at = self.model.applied[business_id]

        def call(credits: int) -> Any:
            return self.ledger.grant(ACCOUNT, amount=credits, kind=kind, business_id=business_id, expires_at=expires_at)

        if other_amount == amount:
            assert call(amount).amount == amount
        else:
            self._expect_conflict(lambda: call(other_amount))

    # ------------------------------------------------------------ holds

    @rule(amount=st.integers(1, 20), limit=st.sampled_from([None, 1, 2, 4]))
    def hold(self, amount: int, limit: int | None) -> None:
        self._hold(self.fresh('t'), amount, limit, self.ledger)

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), other_amount=st.integers(1, 20))
    def repeat_hold(self, data: st.DataObject, other_amount: int) -> None:
        # A retried task creation (the first hold back) or another request reusing its task id (a conflict).
        task_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        same = data.draw(st.booleans())
        self._hold(task_id, self.model.holds[task_id].amount if same else other_amount, None, self.ledger)

    @rule(amount=st.integers(1, 20))
    def hold_with_crash_after_commit(self, amount: int) -> None:
        # The first attempt commits but its caller dies; the retry must see it applied once.
        task_id = self.fresh('t')
        client = self.backend.make_client()
        crash_after_commit(client, lambda: Crash('died after commit'))
        crashing = Ledger(DynamoDBLedgerStore(client, self.table), clock=self.clock, backoff_base=0.001)
        with contextlib.suppress(Crash, InsufficientCredits):
            crashing.hold(ACCOUNT, task_id=task_id, amount=amount)
        self._hold(task_id, amount, None, self.ledger)

    def _hold(self, task_id: str, amount: int, limit: int | None, ledger: Ledger) -> None:
        m = self.model
        business_id = f'task:{task_id}:hold'
        if business_id in m.applied:
            if m.applied[business_id] != (amount,):
                self._expect_conflict(lambda: ledger.hold(ACCOUNT, task_id=task_id, amount=amount))
            else:
                assert ledger.hold(ACCOUNT, task_id=task_id, amount=amount, max_open_holds=limit).amount == amount
            return
        spendable = m.spendable(self.clock.now)
        if m.owed or min(m.available, sum(lot.remaining for lot in spendable)) < amount:
            self._expect(InsufficientCredits, lambda: ledger.hold(ACCOUNT, task_id=task_id, amount=amount))
            return
        if limit is not None and m.open_holds >= limit:
            self._expect(
                ConcurrencyLimitExceeded,
                lambda: ledger.hold(ACCOUNT, task_id=task_id, amount=amount, max_open_holds=limit),
            )
            return
        hold = ledger.hold(ACCOUNT, task_id=task_id, amount=amount, max_open_holds=limit)
        legs: list[tuple[str, int]] = []
        need = amount
        for lot in spendable:
            take = min(need, lot.remaining)
            if take:
                lot.remaining -= take
                lot.held += take
                legs.append((lot.lot_id, take))
                need -= take
        assert [(leg.lot_id, leg.amount) for leg in hold.legs] == legs
        m.applied[business_id] = (amount,)
        m.holds[task_id] = MHold(amount, legs)
        m.available -= amount
        m.held += amount

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data(), extra=st.integers(0, 3))
    def capture(self, data: st.DataObject, extra: int) -> None:
        # Mostly open holds; closed ones test retries and capture-after-release; ``extra`` may exceed the hold.
        task_id = data.draw(st.sampled_from(sorted(self.model.holds)))
        self._settle(task_id, data.draw(st.integers(1, self.model.holds[task_id].amount + extra)))

    @precondition(lambda self: self.model.holds)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._settle(data.draw(st.sampled_from(sorted(self.model.holds))), 0)

    def _settle(self, task_id: str, amount: int) -> None:
        hold = self.model.holds[task_id]
        capture = amount > 0
        op = 'capture' if capture else 'release'

        def call() -> Any:
            if capture:
                return self.ledger.capture(ACCOUNT, task_id=task_id, amount=amount)
            return self.ledger.release(ACCOUNT, task_id=task_id)

        if hold.closed_by is not None:
            if hold.closed_by != op:
                self._expect(HoldClosed, call)
            elif hold.closed_amount != amount:
                self._expect_conflict(call)
            else:
                assert call().captured == amount  # a retry: the first result
            return
        if amount > hold.amount:
            self._expect(Exception, call)  # CaptureExceedsHold
            return
        settlement = call()
        m = self.model
        left, released, expired = amount, 0, 0
        for lot_key, taken in hold.legs:
            lot = m.lots[lot_key]
            spent = min(left, taken)
            left -= spent
            back = taken - spent
            lot.held -= taken
            if back and lot.expired(self.clock.now):
                expired += back
            elif back:
                released += back
                m.credit(lot, back)
        assert (settlement.captured, settlement.released, settlement.expired) == (amount, released, expired)
        hold.closed_by, hold.closed_amount = op, amount
        m.applied[f'task:{task_id}:{op}'] = (amount,)
        m.available += released
        m.held -= hold.amount

    # ------------------------------------------------------------ claw-backs, expiry, time

    @rule(amount=st.integers(1, 25), redeliver=st.booleans())
    def claw_back(self, amount: int, redeliver: bool) -> None:
        business_id = self.fresh('refund:')
        m = self.model
        entry = self.ledger.claw_back(ACCOUNT, amount=amount, business_id=business_id, reason='refund')
        assert entry.amount == -amount
        if redeliver:  # the refund webhook comes twice
            assert self.ledger.claw_back(ACCOUNT, amount=amount, business_id=business_id, reason='refund') == entry
        need = amount
        for lot in m.spendable(self.clock.now):
            take = min(need, lot.remaining)
            lot.remaining -= take
            need -= take
        m.owed += need
        m.available -= amount
        m.applied[business_id] = (amount,)
        m.clawed = True

    @rule(hours=st.integers(1, 12))
    def advance_clock(self, hours: int) -> None:
        self.clock.advance(hours=hours)

    @rule()
    def run_expiry_job(self) -> None:
        entries = self.ledger.expire(self.clock.now)
        due = {
            lot.lot_id: lot.remaining
            for lot in self.model.lots.values()
            if lot.expired(self.clock.now) and lot.remaining
        }
        assert sorted((e.lot, -e.amount) for e in entries) == sorted(due.items())
        for lot_key, amount in due.items():
            self.model.lots[lot_key].remaining = 0
            self.model.available -= amount
            self.model.applied[f'expire:{lot_key}'] = ()

    # ------------------------------------------------------------ checks

    def _expect(self, error: type[Exception], call: Any) -> None:
        before = self.ledger.get_account(ACCOUNT)
        try:
            call()
        except error:
            pass
        else:
            raise AssertionError(f'expected {error.__name__}')
        assert self.ledger.get_account(ACCOUNT) == before  # nothing written

    def _expect_conflict(self, call: Any) -> None:
        self._expect(IdempotencyConflict, call)

    @invariant()
    def books_balance(self) -> None:
        m = self.model
        report = self.ledger.reconcile(ACCOUNT)
        account = report.account
        assert report.ok, report  # balance == sum of entries, held == open holds, lots add up
        assert (account.available, account.held, account.owed, account.open_holds) == (
            m.available,
            m.held,
            m.owed,
            m.open_holds,
        )
        assert account.held == sum(h.amount for h in m.holds.values() if h.closed_by is None)
        assert account.available >= 0 or m.clawed
        assert report.entries_count == len(m.applied)  # each business id booked once
        for lot in self.ledger.list_lots(ACCOUNT, open_only=False):
            ml = m.lots[lot.lot_id]
            assert (lot.remaining, lot.held) == (ml.remaining, ml.held), lot


def ledger_machine(backend: Backend) -> type[RuleBasedStateMachine]:
    """The machine bound to one backend (each example gets its own table)."""
    return type('LedgerMachineOn' + backend.name.title().replace('_', ''), (LedgerMachine,), {'backend': backend})


def test_ledger_matches_its_model(ledger_backend: Backend) -> None:
    # Given a fresh table per example and an independent model
    # When Hypothesis drives random sequences of operations
    # Then after every step the store agrees with the model and the books balance
    # (20 sequences of 30 steps in make test, 1,000 in make test-long: tests/hypothesis_profiles.py)
    run_state_machine_as_test(ledger_machine(ledger_backend), settings=model_settings(examples=20, steps=30))
