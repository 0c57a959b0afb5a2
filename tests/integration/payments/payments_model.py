"""A reference model of what payments are worth (issue 9), written from the rules, not from ``atelier.payments``.

Plain in-memory bookkeeping that ``test_payments_model.py`` runs next to the real code. It knows events only
as the *facts* they report (a pack was paid, a period was paid, refunds now total R, a dispute is lost, the
store refunded a transaction at T, a subscription is now entitled), never their JSON.

The rules it encodes (docs/payments.md, docs/ledger.md and issue 9; where they differ, issue 9's):

- **Grants are decided once**, when a payment is first recorded: a pack's credits; for a subscription period
  the plan's ``period_credits`` (an upgrade invoice in the same period tops the period up to the new plan's
  credits, a downgrade or a $0 / trial invoice grants 0), and 0 when the period had already ended.
- **Recording and booking are two steps.** Recording a fact queues ledger operations on its payment (an
  outbox); they are carried out right away, or, when the ledger call fails, by the next delivery, retry,
  replay or backfill of any event of that payment. A grant carried out at or after its expiry books nothing,
  and that payment counts as having granted 0 from then on.
- **What refunds and disputes take back**: Stripe in proportion to the money,
  ``min(G, round_half_up(G * min(A, refunded + open-or-lost disputes) / A))``; RevenueCat the whole grant
  while the *newest* store-refund report (by event time) of the transaction is a refund, nothing while it
  is a reversal. Each newly recorded fact queues the difference to what the facts asked so far. When an
  operation is carried out it takes at most what the payment booked and has not yet had taken back, and
  gives back at most what was taken; a give-back whose expiry has passed gives nothing (it stays taken).
  What was queued behind such a give-back counted on it: the credits it leaves taken count as taken, so
  the queue is planned anew from what was actually taken (a dispute lost after a win whose give-back came
  too late takes nothing more: its share stays taken once), and no give-back is planned again (none can
  be booked any more).
- **Ledger mechanics**: a claw-back takes the payment's own lot's unexpired remaining credit first, then
  other unexpired lots in spending order (soonest expiry first, never-expiring last, then by creation),
  and the rest is owed (``available`` goes below zero); credit that arrives pays what is owed first. Held
  credit is left alone. Expired credit is never spent and leaves the balance when the expiry job books it;
  held credit of an expired lot that comes back is booked out as expired by the capture or release.
- **Plans**: per subscription the newest report wins (a final one, a deleted Stripe subscription, beats any
  non-final one); the account's plan is the highest-ranked plan of the entitled subscriptions, else free.

Entries are kept as a multiset of ``(tag, kind, amount)``: ``tag`` names the payment (or task) an entry
belongs to, so the comparison with the real ledger is exact without predicting business ids.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

#: plan id -> (rank, credits per paid period); the test adds ``max`` to the shipped catalog.
PLANS: dict[str, tuple[int, int]] = {'free': (0, 0), 'pro': (1, 1000), 'max': (2, 5000)}

Fault = Literal['unreachable', 'lost_answer'] | None
"""How the ledger fails while an event is applied: ``unreachable`` (no call gets through) or ``lost_answer`` (the
first call that books is booked, then its answer is lost; later calls do not get through). A call the ledger
refuses (expired credit) is answered as it is."""

DisputeStatus = Literal['open', 'won', 'lost']
_DISPUTE_RANK: dict[str, int] = {'open': 0, 'won': 1, 'lost': 2}  # a dispute only moves open -> won -> lost


# ---------------------------------------------------------------- the ledger


@dataclass(eq=False)
class Lot:
    tag: str
    kind: str  # 'paid' | 'subscription'
    expires_at: int | None  # epoch seconds
    seq: int  # creation order
    remaining: int = 0
    held: int = 0
    booked_out: bool = False  # by the expiry job

    def expired(self, now: int) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def spending_order(self) -> tuple[bool, int, int]:
        return (self.expires_at is None, self.expires_at or 0, self.seq)


@dataclass
class HoldModel:
    amount: int
    legs: list[tuple[Lot, int]]
    closed: bool = False


class LedgerModel:
    """One account's lots, holds, what it owes and its entries."""

    def __init__(self) -> None:
        self.lots: list[Lot] = []
        self.owed = 0
        self.holds: dict[str, HoldModel] = {}
        self.entries: Counter[tuple[str, str, int]] = Counter()

    @property
    def available(self) -> int:
        return sum(lot.remaining for lot in self.lots) - self.owed

    @property
    def held(self) -> int:
        return sum(lot.held for lot in self.lots)

    def lots_by_tag(self) -> dict[str, tuple[int, int]]:
        """tag -> (remaining, held) summed over its lots."""
        sums: dict[str, tuple[int, int]] = {}
        for lot in self.lots:
            remaining, held = sums.get(lot.tag, (0, 0))
            sums[lot.tag] = (remaining + lot.remaining, held + lot.held)
        return sums

    def _spendable(self, now: int) -> list[Lot]:
        return sorted((lot for lot in self.lots if lot.remaining and not lot.expired(now)), key=Lot.spending_order)

    def _arrive(self, lot: Lot, amount: int) -> None:
        """Credit arriving in ``lot`` pays what is owed first."""
        repaid = min(amount, self.owed)
        self.owed -= repaid
        lot.remaining += amount - repaid

    def grant(self, tag: str, kind: str, expires_at: int | None, amount: int) -> Lot:
        lot = Lot(tag, kind, expires_at, seq=len(self.lots))
        self.lots.append(lot)
        self._arrive(lot, amount)
        self.entries[tag, 'grant', amount] += 1
        return lot

    def claw_back(self, tag: str, own: Lot | None, amount: int, now: int) -> None:
        lots = self._spendable(now)
        if own in lots:
            lots.remove(own)
            lots.insert(0, own)
        need = amount
        for lot in lots:
            take = min(need, lot.remaining)
            lot.remaining -= take
            need -= take
        self.owed += need
        self.entries[tag, 'claw_back', -amount] += 1

    def hold(self, task: str, amount: int, now: int) -> bool:
        """Reserve ``amount`` for ``task``; False when refused (the account owes, or too little unexpired credit)."""
        lots = self._spendable(now)
        if self.owed or min(self.available, sum(lot.remaining for lot in lots)) < amount:
            return False
        legs, need = [], amount
        for lot in lots:
            take = min(need, lot.remaining)
            if take:
                lot.remaining -= take
                lot.held += take
                legs.append((lot, take))
                need -= take
        self.holds[task] = HoldModel(amount, legs)
        self.entries[task, 'hold', -amount] += 1
        return True

    def settle(self, task: str, capture: int, now: int) -> None:
        """Capture ``capture`` (0: release) of an open hold; the rest goes back, unless its lot has expired."""
        hold = self.holds[task]
        left, released = capture, 0
        for lot, taken in hold.legs:
            spent = min(left, taken)
            left -= spent
            back = taken - spent
            lot.held -= taken
            if back and not lot.expired(now):
                released += back
                self._arrive(lot, back)
        hold.closed = True
        self.entries[task, 'capture' if capture else 'release', released] += 1

    def expire(self, now: int) -> None:
        """The expiry job: book out the unused, unheld credit of every due lot, once."""
        for lot in self.lots:
            if lot.expired(now) and not lot.booked_out:
                lot.booked_out = True
                if lot.remaining:
                    self.entries[lot.tag, 'expire', -lot.remaining] += 1
                    lot.remaining = 0


# ---------------------------------------------------------------- facts (what events report)


@dataclass(frozen=True)
class SubscriptionReport:
    """A subscription's status as of ``at_ms``: entitled to ``plan`` or not; ``final`` never reverts."""

    subscription: str
    at_ms: int
    plan: str
    entitled: bool
    final: bool = False


@dataclass(frozen=True)
class PackPaid:
    payment: str
    credits: int
    money: int


@dataclass(frozen=True)
class PeriodPaid:
    """A paid subscription period (a Stripe invoice, a store purchase or renewal); ``money`` > 0."""

    payment: str
    subscription: str
    plan: str
    period_end: int
    money: int


@dataclass(frozen=True)
class Refunded:
    """Stripe: the charge's refunds now total ``cumulative`` of ``charge``."""

    payment: str
    cumulative: int
    charge: int


@dataclass(frozen=True)
class Disputed:
    payment: str
    dispute: str
    money: int
    status: DisputeStatus


@dataclass(frozen=True)
class StoreRefund:
    """RevenueCat: the store refunded the transaction (``refunded``) or reversed its refund, as of ``at_ms``."""

    payment: str
    at_ms: int
    refunded: bool


@dataclass(frozen=True)
class Looked:
    """The event names the payment but reports nothing new (an async payment failed): its queue is carried out."""

    payment: str


Fact = SubscriptionReport | PackPaid | PeriodPaid | Refunded | Disputed | StoreRefund | Looked
Outcomes = dict[str, 'PaymentsModel']
"""What a delivery may end as ('processed', 'duplicate', 'failed'), each with the model after it: more than one
only while the ledger fails, where the rules leave a choice to the code."""


# ---------------------------------------------------------------- payments


@dataclass(frozen=True)
class Grant:
    credits: int
    kind: str
    expires_at: int | None
    money: int


@dataclass
class Payment:
    """One payment (a Stripe PaymentIntent, a store transaction): its facts, its queue, what it booked."""

    tag: str
    grant: Grant | None = None
    lot: Lot | None = None  # the lot its grant booked (claw-backs take from it first)
    booked: int = 0  # credits its grant booked: 0 until carried out, and for good if carried out too late
    asked: int = 0  # net credits the recorded facts asked to take back (the sum of what was queued)
    taken: int = 0  # net credits actually taken back
    pending: list[tuple[str, int, bool]] = field(default_factory=list)  # (grant | take | give, credits, booked)
    charge: int | None = None
    refunded: int = 0
    disputes: dict[str, tuple[int, int]] = field(default_factory=dict)  # dispute -> (money, status rank)
    store_refund: tuple[int, bool] | None = None  # the newest store report: (at_ms, refunded)
    void: bool = False  # its grant was carried out too late: it counts as having granted 0
    gives_expired: bool = False  # a give-back came too late: none can be booked any more, what it kept stays taken

    def target(self) -> int:
        """What the facts say should be taken back now."""
        grant = self.grant
        if grant is None or self.void or grant.credits == 0:
            return 0
        if self.store_refund is not None and self.store_refund[1]:
            return grant.credits
        money = self.charge or grant.money
        assert money > 0, 'a paid grant has money'
        disputed = sum(amount for amount, rank in self.disputes.values() if rank != _DISPUTE_RANK['won'])
        share = min(money, self.refunded + disputed)
        return min(grant.credits, (2 * grant.credits * share + money) // (2 * money))  # rounded half up

    def _queue_difference(self) -> None:
        delta = self.target() - self.asked
        if delta < 0 and self.gives_expired:
            return  # nothing can be given back: the credits stay taken
        if delta:
            self.pending.append(('take', delta, False) if delta > 0 else ('give', -delta, False))
            self.asked += delta

    # ------------------------------------------------------------ recording facts
    def record_grant(self, grant: Grant) -> None:
        if self.grant is not None:
            return  # decided once
        self.grant = grant
        if grant.credits:
            self.pending.append(('grant', grant.credits, False))
        self._queue_difference()

    def record_refund(self, cumulative: int, charge: int) -> None:
        self.charge = self.charge or charge
        self.refunded = max(self.refunded, cumulative)
        self._queue_difference()

    def record_dispute(self, dispute: str, money: int, status: DisputeStatus) -> None:
        current = self.disputes.get(dispute)
        if current is None or _DISPUTE_RANK[status] > current[1]:
            self.disputes[dispute] = (money, _DISPUTE_RANK[status])
        self._queue_difference()

    def record_store_refund(self, at_ms: int, refunded: bool) -> None:
        if self.store_refund is None or at_ms > self.store_refund[0]:
            self.store_refund = (at_ms, refunded)
        self._queue_difference()

    # ------------------------------------------------------------ carrying out the queue
    def carry_out(self, ledger: LedgerModel, now: int, fault: Fault, *, asks_when_expired: bool) -> bool:
        """Book the queued operations in order; True when the ledger failed (what is left stays queued).

        A grant or give-back whose expiry has passed books nothing. Whether the code asks the ledger about it
        (which refuses it, or answers "booked" for one booked before) or decides by its own clock is not in
        the rules: ``asks_when_expired`` says which, and matters only while the ledger fails. An operation
        whose answer was lost stays queued as booked: carrying it out again asks the ledger, which books
        nothing twice.
        """
        while self.pending:
            op, amount, booked = self.pending[0]
            grant = self.grant
            assert grant is not None
            expired = op != 'take' and grant.expires_at is not None and grant.expires_at <= now
            if expired and not booked:
                self.void = self.void or op == 'grant'  # too late: the payment counts as having granted 0
                if asks_when_expired and fault == 'unreachable':
                    return True
                self.pending.pop(0)  # refused, or not asked: nothing booked, and a give-back stays taken
                if op == 'give':
                    self._plan_anew()
                continue
            if not booked:
                amount = min(amount, self.booked - self.taken) if op == 'take' else amount
                amount = min(amount, self.taken) if op == 'give' else amount
                if amount <= 0:
                    self.pending.pop(0)  # nothing to book: no ledger call
                    continue
            elif expired and not asks_when_expired:
                self.pending.pop(0)
                continue
            if fault == 'unreachable':
                return True
            if not booked:
                self._book(ledger, op, amount, now)
            if fault == 'lost_answer':
                self.pending[0] = (op, amount, True)
                return True
            self.pending.pop(0)
        return False

    def _plan_anew(self) -> None:
        """A give-back came too late, so its credits stay taken: what was queued behind it counted on it. The
        queue (nothing in it booked yet) is replaced by the difference between what the facts ask and what
        was actually taken; give-backs are over for this payment."""
        assert not any(booked for _, _, booked in self.pending)
        self.pending.clear()
        self.asked = self.taken
        self.gives_expired = True
        self._queue_difference()

    def _book(self, ledger: LedgerModel, op: str, amount: int, now: int) -> None:
        grant = self.grant
        assert grant is not None
        if op == 'grant':
            self.lot = ledger.grant(self.tag, grant.kind, grant.expires_at, amount)
            self.booked = amount
        elif op == 'take':
            ledger.claw_back(self.tag, self.lot, amount, now)
            self.taken += amount
        else:
            ledger.grant(self.tag, grant.kind, grant.expires_at, amount)
            self.taken -= amount


# ---------------------------------------------------------------- one account's payments


class PaymentsModel:
    """An account: its payments, subscriptions, ledger and the inbox of provider events."""

    def __init__(self) -> None:
        self.ledger = LedgerModel()
        self.payments: dict[str, Payment] = {}
        self.subscriptions: dict[str, SubscriptionReport] = {}
        self.period_credits: dict[tuple[str, int], int] = {}  # (subscription, period end) -> credits decided
        self.inbox: dict[str, str] = {}  # event id -> 'processed' | 'failed'

    @property
    def plan(self) -> str:
        entitled = [r.plan for r in self.subscriptions.values() if r.entitled]
        return max(entitled, key=lambda plan: PLANS[plan][0], default='free')

    def payment(self, tag: str) -> Payment:
        return self.payments.setdefault(tag, Payment(tag))

    # ------------------------------------------------------------ deliveries
    def deliver(self, event_id: str, facts: tuple[Fact, ...], now: int, fault: Fault = None) -> Outcomes:
        """A webhook delivery (or a backfilled event): 'duplicate' once settled, else 'processed' | 'failed'."""
        if self.inbox.get(event_id) == 'processed':
            return {'duplicate': self}
        return self.replay(event_id, facts, now, fault)

    def replay(self, event_id: str, facts: tuple[Fact, ...], now: int, fault: Fault = None) -> Outcomes:
        """Apply a stored event again, whatever its status."""
        outcomes: Outcomes = {}
        for asks_when_expired in (False, True) if fault else (True,):
            model = copy.deepcopy(self) if fault else self
            failed = model._apply(facts, now, fault, asks_when_expired)
            model.inbox[event_id] = 'failed' if failed else 'processed'
            outcomes[model.inbox[event_id]] = model
        return outcomes

    def _apply(self, facts: tuple[Fact, ...], now: int, fault: Fault, asks_when_expired: bool) -> bool:
        touched: Payment | None = None
        for fact in facts:
            if isinstance(fact, SubscriptionReport):
                self._report(fact)
                continue
            touched = self.payment(fact.payment)
            if isinstance(fact, PackPaid):
                touched.record_grant(Grant(fact.credits, 'paid', None, fact.money))
            elif isinstance(fact, PeriodPaid):
                if touched.grant is None:
                    credits = self._decide_period(fact, now)
                    touched.record_grant(Grant(credits, 'subscription', fact.period_end, fact.money))
            elif isinstance(fact, Refunded):
                touched.record_refund(fact.cumulative, fact.charge)
            elif isinstance(fact, Disputed):
                touched.record_dispute(fact.dispute, fact.money, fact.status)
            elif isinstance(fact, StoreRefund):
                touched.record_store_refund(fact.at_ms, fact.refunded)
        if touched is None:
            return False
        return touched.carry_out(self.ledger, now, fault, asks_when_expired=asks_when_expired)

    def _decide_period(self, fact: PeriodPaid, now: int) -> int:
        if fact.period_end <= now:
            return 0  # the period is over: its credit would already have expired
        period = (fact.subscription, fact.period_end)
        already = self.period_credits.get(period, 0)
        credits = max(0, PLANS[fact.plan][1] - already)  # a new period: all; an upgrade: the top-up
        self.period_credits[period] = already + credits
        return credits

    def _report(self, report: SubscriptionReport) -> None:
        current = self.subscriptions.get(report.subscription)
        newer = current is None or (report.final, report.at_ms) > (current.final, current.at_ms)
        if newer:
            self.subscriptions[report.subscription] = report

    # ------------------------------------------------------------ spending and time
    def expire(self, now: int) -> None:
        self.ledger.expire(now)
