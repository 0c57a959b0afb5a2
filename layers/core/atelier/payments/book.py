"""The payment book: applies payment facts to their stored state, then to the ledger and the account's plan.

Every change is: read a state item, apply a pure rule (:mod:`atelier.payments.state`), write it back
guarded by its version (re-read and retry when someone else wrote first), then carry out the ledger
operations the rule queued (each keyed by its business id, so doing one twice books it once), and
finally drop them from the queue. A crash anywhere leaves either nothing done, or queued operations
that the next delivery, retry or replay of any event for the same payment carries out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel

from atelier.ledger.errors import AccountNotFound, CreditExpired, IdempotencyConflict
from atelier.ledger.models import LotKind
from atelier.observability import logger
from atelier.payments.catalog import CommerceCatalog
from atelier.payments.errors import StateContended
from atelier.payments.ports import CreditLedger, PlanWriter
from atelier.payments.state import AccountPlanState, GrantFact, LedgerOp, PaymentState
from atelier.payments.store import PaymentsTable, VersionConflict

S = TypeVar('S', bound=BaseModel)
Clock = Callable[[], datetime]

_MAX_ATTEMPTS = 25


def utc_now() -> datetime:
    return datetime.now(UTC)


class PaymentBook:
    """Payment and subscription state on the events table, kept in step with the ledger."""

    def __init__(
        self,
        table: PaymentsTable,
        ledger: CreditLedger,
        plans: PlanWriter,
        catalog: CommerceCatalog,
        *,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._table = table
        self._ledger = ledger
        self._plans = plans
        self._catalog = catalog
        self._clock = clock
        self._sleep = sleep
        self._ranks = {plan.id: plan.rank for plan in catalog.plans}

    @property
    def catalog(self) -> CommerceCatalog:
        return self._catalog

    def now(self) -> datetime:
        return self._clock()

    # ---------------------------------------------------------------- accounts
    def account_exists(self, account_id: str | None) -> bool:
        if not account_id or not isinstance(account_id, str) or len(account_id) > 128:
            return False
        try:
            self._ledger.get_account(account_id)
        except AccountNotFound:
            return False
        except Exception as exc:  # an id the ledger refuses to even look up is no account of ours
            if getattr(exc, 'code', '') == 'invalid_input':
                return False
            raise
        return True

    def remember_customer(self, customer_id: str, account_id: str) -> None:
        self._table.remember_customer(customer_id, account_id)

    def account_of_customer(self, customer_id: str) -> str | None:
        return self._table.account_of_customer(customer_id)

    # ---------------------------------------------------------------- payments
    def payment(self, key: str) -> PaymentState:
        doc, _ = self._table.load_state(_payment_pk(key))
        return PaymentState.model_validate(doc) if doc else PaymentState(key=key)

    def apply_payment(self, key: str, change: Callable[[PaymentState], PaymentState]) -> PaymentState:
        """Add facts to the payment ``key`` and book what they change (queued operations included).

        When the ledger refuses an operation, what was queued after it is planned anew (``with_carried_out``)
        and carried out too, so that a delivery leaves nothing queued unless the ledger failed under it. A
        refusal ends the grant or the give-backs of the payment for good and what is planned anew is only
        claw-backs (never refused), so this ends after a second round; the bound is a guard.
        """
        state = self._mutate(
            _payment_pk(key),
            _payment_loader(key),
            change,
            entity='payment_state',
            index=_payment_index,
        )
        for _ in range(_MAX_ATTEMPTS):
            if not state.pending:
                return state
            done: set[str] = set()
            refused: str | None = None
            for op in state.pending:
                if not self._execute(op):
                    # The operations queued after it assumed it would be booked: they are planned again.
                    refused = op.business_id
                    break
                done.add(op.business_id)

            state = self._mutate(
                _payment_pk(key),
                _payment_loader(key),
                partial(PaymentState.with_carried_out, done=done, refused=refused),
                entity='payment_state',
                index=_payment_index,
            )
            if refused is None:
                return state
        return state

    def _execute(self, op: LedgerOp) -> bool:
        """Carry out one queued operation; False when the ledger refused a grant whose credit had expired.

        The ledger decides (by its clock, after looking for the business id): a grant it booked before
        answers as booked however late the retry, one it never booked is refused once its expiry passed.
        """
        if op.op == 'grant':
            expires_at = datetime.fromtimestamp(op.expires_at, UTC) if op.expires_at is not None else None
            try:
                self._ledger.grant(
                    op.account_id,
                    amount=op.amount,
                    kind=LotKind(op.kind or 'paid'),
                    business_id=op.business_id,
                    expires_at=expires_at,
                    memo=op.note or None,
                )
            except CreditExpired:
                # Credit of a period that is over would already have expired: nothing is booked.
                logger.warning('skipped a grant whose credit has expired', extra={'business_id': op.business_id})
                return False
            except IdempotencyConflict:
                logger.error('business id already booked differently', extra={'business_id': op.business_id})
            return True
        try:
            self._ledger.claw_back(
                op.account_id,
                amount=op.amount,
                business_id=op.business_id,
                reason=op.note or 'refund',
                source=op.source,
            )
        except IdempotencyConflict:
            logger.error('business id already booked differently', extra={'business_id': op.business_id})
        return True

    # ---------------------------------------------------------------- subscriptions and plans
    def plan_state(self, account_id: str) -> AccountPlanState:
        doc, _ = self._table.load_state(_plan_pk(account_id))
        return AccountPlanState.model_validate(doc) if doc else AccountPlanState(account_id=account_id)

    def apply_plan(
        self, account_id: str, change: Callable[[AccountPlanState], AccountPlanState], *, sync: bool = True
    ) -> AccountPlanState:
        """Change the account's subscription state, then make the account's plan follow it."""
        state = self._mutate(
            _plan_pk(account_id),
            _plan_loader(account_id),
            change,
            entity='account_plan_state',
            index=lambda s: (f'ACCOUNT_PAYMENTS#{s.account_id}', 'PLAN'),
        )
        if sync:
            self.sync_plan(account_id)
        return state

    def plan_of(self, state: AccountPlanState) -> str:
        return state.plan(self._ranks)

    def sync_plan(self, account_id: str) -> str:
        """Write the plan the subscriptions give onto the account.

        Done until the state did not move while writing, so that of two concurrent writers the one
        that saw the newest state writes last.
        """
        for _ in range(_MAX_ATTEMPTS):
            doc, version = self._table.load_state(_plan_pk(account_id))
            state = AccountPlanState.model_validate(doc) if doc else AccountPlanState(account_id=account_id)
            desired = self.plan_of(state)
            if getattr(self._ledger.get_account(account_id), 'plan', None) != desired:
                self._plans.set_plan(account_id, desired)
            if self._table.load_state(_plan_pk(account_id))[1] == version:
                return desired
        raise StateContended(f'the plan of {account_id} kept changing')

    def decide_period_credits(
        self, account_id: str, business_id: str, *, subscription: str, period_end: int, plan_credits: int
    ) -> int:
        """The credits one paid period invoice/transaction grants (decided once, see ``with_period_grant``)."""
        state = self.apply_plan(
            account_id,
            lambda s: s.with_period_grant(
                business_id, subscription=subscription, period_end=period_end, plan_credits=plan_credits
            ),
            sync=False,
        )
        return state.decided.get(business_id, 0)

    def grant_period(
        self,
        payment_key: str,
        *,
        account_id: str,
        business_id: str,
        subscription: str,
        period_end: int,
        plan_credits: int,
        amount: int | None,
        currency: str | None,
        note: str,
    ) -> tuple[PaymentState, GrantFact]:
        """Book one paid subscription period (a Stripe invoice, a store renewal) on the payment ``payment_key``.

        Its credits are decided once per ``business_id`` (see ``decide_period_credits``); a period that is
        already over grants none. Returns the payment's state and the grant fact.
        """
        credits = 0
        if period_end > self.now().timestamp():
            credits = self.decide_period_credits(
                account_id, business_id, subscription=subscription, period_end=period_end, plan_credits=plan_credits
            )
        grant = GrantFact(
            business_id=business_id,
            account_id=account_id,
            credits=credits,
            amount=amount,
            currency=currency,
            kind='subscription',
            expires_at=period_end,
            note=note,
        )
        return self.apply_payment(payment_key, lambda s: s.with_grant(grant)), grant

    def move_subscriptions(self, provider: str, from_account: str, to_account: str) -> list[str]:
        """Move ``provider``'s subscriptions of one account to another (copy first, so a crash loses nothing)."""
        source = self.plan_state(from_account)
        moving = {k: v for k, v in source.subscriptions.items() if v.provider == provider}
        if not moving:
            return []

        def add(state: AccountPlanState) -> AccountPlanState:
            for key, subscription in moving.items():
                state = state.with_subscription(key, subscription)
            return state

        self.apply_plan(to_account, add)
        self.apply_plan(from_account, lambda s: s.without_subscriptions(set(moving)))
        return sorted(moving)

    # ---------------------------------------------------------------- machinery
    def _mutate(
        self,
        pk: str,
        load: Callable[[dict[str, Any] | None], S],
        change: Callable[[S], S],
        *,
        entity: str,
        index: Callable[[S], tuple[str, str]],
    ) -> S:
        for attempt in range(_MAX_ATTEMPTS):
            doc, version = self._table.load_state(pk)
            current = load(doc)
            updated = change(current)
            if updated == current:
                return current
            try:
                self._table.save_state(
                    pk, updated.model_dump(mode='json'), version=version, entity=entity, index=index(updated)
                )
            except VersionConflict:
                self._sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))
                continue
            return updated
        raise StateContended(f'{pk} kept changing')


def _payment_loader(key: str) -> Callable[[dict[str, Any] | None], PaymentState]:
    def load(doc: dict[str, Any] | None) -> PaymentState:
        return PaymentState.model_validate(doc) if doc else PaymentState(key=key)

    return load


def _plan_loader(account_id: str) -> Callable[[dict[str, Any] | None], AccountPlanState]:
    def load(doc: dict[str, Any] | None) -> AccountPlanState:
        return AccountPlanState.model_validate(doc) if doc else AccountPlanState(account_id=account_id)

    return load


def _payment_pk(key: str) -> str:
    return f'PAYMENT#{key}'


def _plan_pk(account_id: str) -> str:
    return f'PLAN#{account_id}'


def _payment_index(state: PaymentState) -> tuple[str, str]:
    if state.grant is None:
        # A refund or dispute for a payment not (yet) seen paid is what ops look at.
        waiting = state.refunded > 0 or bool(state.chargebacks)
        return ('PAYMENTS#unattributed' if waiting else 'PAYMENTS#unpaid'), f'PAYMENT#{state.key}'
    return f'ACCOUNT_PAYMENTS#{state.grant.account_id}', f'PAYMENT#{state.key}'
