"""The state of one payment and of one account's subscriptions, and the pure rules that evolve them.

Webhooks arrive late, twice, or out of order, so nothing here acts on "the event". Each event adds
*facts* to a state (a purchase was paid, the charge's refunds now total X, a dispute was won), and
the credits the account should have from that payment are recomputed from all the facts known so
far. The difference to what was already booked becomes ledger operations with deterministic business
ids, stored in the state (an outbox) in the same write as the facts, and then applied to the ledger,
which books each business id once. Whatever the order of the facts, the final booking is the same:

    credits kept = granted - claw-back target(refunds, disputes)

Merging is monotonic (a semilattice, so order and repetition do not matter): cumulative refund amounts
only grow, a dispute only moves up ``open`` -> ``won`` -> ``lost``, a store refund is what its newest
report says (refunded, reversed, refunded again...), a cancelled subscription stays cancelled, and a
subscription report older than the one stored is ignored.

The ledger has the last word on what was booked. A grant carried out only after its credit expired (a
retry, replay or backfill after the period end) books nothing; the payment then counts as having granted
nothing (``grant_skipped``): its refunds take nothing and its reversals give nothing. A give-back that
cannot be booked (its expiry has passed) leaves the credits taken. So a payment never takes back more than
it booked and has not yet taken back.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: How many decided invoices / period totals an account state remembers (the ledger remains the guard).
_REMEMBER = 48


class _Model(BaseModel):
    model_config = ConfigDict(extra='forbid')


class LedgerOp(_Model):
    """One ledger call to make, exactly as it will be made (so that a repeat is an exact replay)."""

    op: Literal['grant', 'claw_back']
    business_id: str
    account_id: str
    amount: int = Field(gt=0)
    kind: Literal['paid', 'subscription'] | None = None  # grants only
    expires_at: int | None = None  # grants only, epoch seconds
    source: str | None = None  # the grant a claw-back takes from first, or a give-back returns to
    note: str = ''


class GrantFact(_Model):
    """A purchase that was paid: who gets how many credits, for how much money."""

    business_id: str  # stripe:checkout:{session} | stripe:invoice:{invoice} | rc:txn:{transaction}
    account_id: str
    credits: int = Field(ge=0)
    amount: int | None = None  # money paid, currency minor unit
    currency: str | None = None
    kind: Literal['paid', 'subscription']
    expires_at: int | None = None
    note: str = ''


class Chargeback(_Model):
    """A dispute (Stripe) or a store refund (RevenueCat): ``open``/``lost`` take credits, ``won`` gives them back."""

    amount: int | None = None  # money disputed; None = the whole payment
    status: Literal['open', 'lost', 'won']
    #: Store refunds only: epoch ms of the report (a refund ``open``, its reversal ``won``); the newest decides.
    event_at: int | None = None


#: The chargeback id of a store transaction's refund (RevenueCat reports one refund state per transaction).
STORE_REFUND = 'store_refund'


#: Merge order of chargeback statuses: news only moves up. Were a dispute ever reported both won and lost,
#: ``lost`` (credits stay taken) wins in any order.
_CHARGEBACK_RANK = {'open': 0, 'won': 1, 'lost': 2}


class PaymentState(_Model):
    """Everything known about one payment (a Stripe PaymentIntent, a store transaction)."""

    key: str
    grant: GrantFact | None = None
    conflicting_grants: list[str] = Field(default_factory=list)
    charge_amount: int | None = None
    refunded: int = 0  # cumulative money refunded, as Stripe reports it
    chargebacks: dict[str, Chargeback] = Field(default_factory=dict)
    failed: bool = False
    grant_skipped: bool = False  # the ledger refused the grant: its credit had expired before it was booked
    give_backs_expired: bool = False  # the ledger refused a give-back: the grant's period is over, none can be booked
    clawed: int = 0  # net credits taken back by the operations emitted so far
    pending: list[LedgerOp] = Field(default_factory=list)
    applied: list[str] = Field(default_factory=list)

    # ---------------------------------------------------------------- facts
    def with_grant(self, grant: GrantFact) -> PaymentState:
        """The payment was paid (a second, different grant for the same payment is kept aside, not booked)."""
        if self.grant is not None:
            if self.grant.business_id != grant.business_id and grant.business_id not in self.conflicting_grants:
                return self._next(conflicting_grants=[*self.conflicting_grants, grant.business_id])
            return self
        state = self._next(grant=grant)
        ops: list[LedgerOp] = []
        if grant.credits > 0:
            ops.append(
                LedgerOp(
                    op='grant',
                    business_id=grant.business_id,
                    account_id=grant.account_id,
                    amount=grant.credits,
                    kind=grant.kind,
                    expires_at=grant.expires_at,
                    note=grant.note,
                )
            )
        return state._settle(f'{grant.business_id}:clawback', ops)

    def with_refund(self, fact_id: str, *, cumulative: int, charge_amount: int | None) -> PaymentState:
        """Stripe reports the charge's cumulative ``amount_refunded``; only growth is news."""
        changes: dict[str, object] = {}
        if charge_amount and self.charge_amount is None:
            changes['charge_amount'] = charge_amount
        if cumulative > self.refunded:
            changes['refunded'] = cumulative
        if not changes:
            return self
        return self._next(**changes)._settle(fact_id)

    def with_chargeback(
        self, fact_id: str, *, chargeback_id: str, amount: int | None, status: Literal['open', 'lost', 'won']
    ) -> PaymentState:
        current = self.chargebacks.get(chargeback_id)
        if current is not None and _CHARGEBACK_RANK[status] <= _CHARGEBACK_RANK[current.status]:
            return self  # older news, or the dispute already closed the other way
        chargebacks = {**self.chargebacks, chargeback_id: Chargeback(amount=amount, status=status)}
        return self._next(chargebacks=chargebacks)._settle(fact_id)

    def with_store_refund(self, fact_id: str, *, refunded: bool, event_at: int) -> PaymentState:
        """A store refund (``refunded``) or its reversal, reported at ``event_at`` (ms): the newest report decides.

        So refund, reversal, refund again ends refunded, in any delivery order. Of two reports of the same
        instant the refund wins. Each report is its own fact (``fact_id``), so each claw-back or give-back it
        causes has its own business id.
        """
        current = self.chargebacks.get(STORE_REFUND)
        if current is not None and (event_at, refunded) <= (current.event_at or 0, current.status != 'won'):
            return self
        report = Chargeback(amount=None, status='open' if refunded else 'won', event_at=event_at)
        return self._next(chargebacks={**self.chargebacks, STORE_REFUND: report})._settle(fact_id)

    def with_failure(self) -> PaymentState:
        return self if self.failed else self._next(failed=True)

    # ---------------------------------------------------------------- outbox
    def with_carried_out(self, done: Collection[str], refused: str | None = None) -> PaymentState:
        """Drop the queued operations the ledger booked (``done``), and the one it refused as expired (``refused``:
        the executor stops there, so every operation queued after it is still queued).

        Operations are planned in queue order, each assuming those before it will be booked. So:

        - the payment's own grant refused: it granted nothing; every operation of the payment goes, and
          nothing counts as taken (``grant_skipped``);
        - a give-back refused (its grant's period is over): the operations queued after it were planned on a
          wrong premise; they go, their effect on ``clawed`` is undone, the refused give-back's credits stay
          taken, no give-back is planned again (``give_backs_expired``), and the claw-back target is settled
          anew from the facts (under ``{give-back}:resettle``).
        """
        if not any(op.business_id in done or op.business_id == refused for op in self.pending):
            return self
        grant = self.grant
        applied = (self.applied + [op.business_id for op in self.pending if op.business_id in done])[-_REMEMBER:]
        pending = [op for op in self.pending if op.business_id not in done]
        position = next((i for i, op in enumerate(pending) if op.business_id == refused), None)
        if position is None:
            return self._next(pending=pending, applied=applied)
        if grant is None or pending[position].business_id == grant.business_id:
            return self._next(pending=[], applied=applied, grant_skipped=True, clawed=0)
        planned_after = pending[position + 1 :]
        undone = sum(op.amount if op.op == 'grant' else -op.amount for op in planned_after)
        clawed = self.clawed + pending[position].amount + undone
        state = self._next(pending=pending[:position], applied=applied, clawed=clawed, give_backs_expired=True)
        return state._settle(f'{refused}:resettle')

    # ---------------------------------------------------------------- rules
    def clawback_target(self) -> int:
        """Credits that refunds and open or lost disputes take back (proportional to the money, at most all)."""
        grant = self.grant
        if grant is None or grant.credits == 0 or self.grant_skipped:
            return 0
        basis = self.charge_amount or grant.amount or 0
        active = [cb for cb in self.chargebacks.values() if cb.status in ('open', 'lost')]
        if basis <= 0:
            # No money to be proportional to: only a refund or chargeback of the whole payment counts.
            whole = self.refunded > 0 or any(cb.amount is None for cb in active)
            return grant.credits if whole else 0
        taken = min(basis, self.refunded + sum(basis if cb.amount is None else cb.amount for cb in active))
        return min(grant.credits, _round_half_up(grant.credits * taken, basis))

    def _settle(self, fact_id: str, ops: list[LedgerOp] | None = None) -> PaymentState:
        ops = list(ops or [])
        grant = self.grant
        delta = self.clawback_target() - self.clawed
        if grant is not None and delta > 0:
            ops.append(
                LedgerOp(
                    op='claw_back',
                    business_id=fact_id,
                    account_id=grant.account_id,
                    amount=delta,
                    source=grant.business_id,
                    note=f'taken back from {grant.business_id}',
                )
            )
        elif grant is not None and delta < 0 and not self.give_backs_expired:
            ops.append(
                LedgerOp(
                    op='grant',
                    business_id=fact_id,
                    account_id=grant.account_id,
                    amount=-delta,
                    kind=grant.kind,
                    expires_at=grant.expires_at,
                    source=grant.business_id,
                    note=f'given back to {grant.business_id}',
                )
            )
        if not ops:
            return self
        clawed = self.clawed + delta if grant is not None else self.clawed
        return self._next(clawed=clawed, pending=self.pending + ops)

    def _next(self, **changes: object) -> PaymentState:
        return self.model_copy(update=changes, deep=True)


def _round_half_up(numerator: int, denominator: int) -> int:
    return (2 * numerator + denominator) // (2 * denominator)


# ---------------------------------------------------------------- subscriptions and plans


class Subscription(_Model):
    """One provider subscription as last reported (``event_at`` orders reports; ``final`` never reverts)."""

    provider: Literal['stripe', 'revenuecat']
    plan: str
    status: str
    entitled: bool
    final: bool = False
    event_at: int = 0  # epoch milliseconds of the provider event that reported this status
    period_end: int | None = None  # epoch seconds
    will_renew: bool = True
    product: str | None = None  # the catalog's store product (RevenueCat), to match reconciled reports
    #: Keyed by a RevenueCat reconciliation that did not know the subscription's original transaction
    #: (``GET /subscribers`` does not report it); the first store report of the same product adopts it.
    provisional: bool = False


class AccountPlanState(_Model):
    """An account's subscriptions (across providers), the plan they give, and the period grants decided."""

    account_id: str
    subscriptions: dict[str, Subscription] = Field(default_factory=dict)
    period_grants: dict[str, int] = Field(default_factory=dict)  # '{subscription}@{period_end}' -> credits
    decided: dict[str, int] = Field(default_factory=dict)  # grant business id -> credits

    def plan(self, ranks: dict[str, int]) -> str:
        """The highest-ranked plan among entitled subscriptions, else ``free``."""
        entitled = [s.plan for s in self.subscriptions.values() if s.entitled and s.plan in ranks]
        return max(entitled, key=lambda p: ranks[p], default='free')

    def with_subscription(self, key: str, report: Subscription) -> AccountPlanState:
        current = self.subscriptions.get(key)
        if current is not None:
            if current == report or (current.final and not report.final):
                return self
            # A final report (a deleted subscription) beats any other; otherwise the newest report wins, and
            # of two from the same instant the one further along the lifecycle (then any fixed order), so
            # that the outcome never depends on the order of delivery.
            if report.final == current.final and _order(report) < _order(current):
                return self
        return self.model_copy(update={'subscriptions': {**self.subscriptions, key: report}}, deep=True)

    def with_renewal_off(self, key: str, event_at: int) -> AccountPlanState:
        current = self.subscriptions.get(key)
        if current is None or current.event_at > event_at or not current.will_renew:
            return self
        updated = current.model_copy(update={'will_renew': False, 'event_at': event_at})
        return self.model_copy(update={'subscriptions': {**self.subscriptions, key: updated}}, deep=True)

    def with_key_adopted(self, key: str, product: str | None) -> AccountPlanState:
        """A provisional subscription of ``product`` becomes ``key`` (the key its store reports use).

        Its period grants move along, so that a later invoice of the same period is still recognised.
        """
        if product is None or key in self.subscriptions:
            return self
        found = next((k for k, s in self.subscriptions.items() if s.provisional and s.product == product), None)
        if found is None:
            return self
        subscriptions = {k: v for k, v in self.subscriptions.items() if k != found}
        subscriptions[key] = self.subscriptions[found].model_copy(update={'provisional': False})
        prefix = f'{found}@'
        period_grants = {
            (f'{key}@{period.removeprefix(prefix)}' if period.startswith(prefix) else period): credits
            for period, credits in self.period_grants.items()
        }
        return self.model_copy(update={'subscriptions': subscriptions, 'period_grants': period_grants}, deep=True)

    def without_subscriptions(self, keys: set[str]) -> AccountPlanState:
        if not keys & self.subscriptions.keys():
            return self
        kept = {k: v for k, v in self.subscriptions.items() if k not in keys}
        return self.model_copy(update={'subscriptions': kept}, deep=True)

    def with_period_grant(
        self, business_id: str, *, subscription: str, period_end: int, plan_credits: int
    ) -> AccountPlanState:
        """Decide the credits of one paid period invoice/transaction, once.

        A period is (subscription, period end). Its first paid invoice grants the plan's credits; a later
        invoice for the same period (an upgrade's proration invoice) tops it up to the new plan's credits;
        a downgrade within the period grants nothing more.
        """
        if business_id in self.decided:
            return self
        period = f'{subscription}@{period_end}'
        already = self.period_grants.get(period, 0)
        credits = max(0, plan_credits - already)
        period_grants = _recent({**self.period_grants, period: already + credits})
        decided = _recent({**self.decided, business_id: credits})
        return self.model_copy(update={'period_grants': period_grants, 'decided': decided}, deep=True)


#: How far along its lifecycle a subscription status is (ties between reports of the same instant).
_STATUS_ORDER = {
    'incomplete': 0,
    'trialing': 1,
    'active': 2,
    'past_due': 3,
    'unpaid': 4,
    'paused': 4,
    'expired': 5,
    'incomplete_expired': 6,
    'canceled': 6,
}


def _order(report: Subscription) -> tuple[int, int, str]:
    return report.event_at, _STATUS_ORDER.get(report.status, 0), report.model_dump_json()


def _recent(values: dict[str, int]) -> dict[str, int]:
    return dict(list(values.items())[-_REMEMBER:])
