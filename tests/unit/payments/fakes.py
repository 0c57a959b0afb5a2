"""In-memory fakes of the payments ports: the events-table states and the ledger."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from atelier.ledger.errors import AccountNotFound, CreditExpired, IdempotencyConflict
from atelier.payments.book import PaymentBook
from atelier.payments.catalog import load_commerce_catalog
from atelier.payments.store import VersionConflict


class FakeTable:
    """The versioned-state and customer parts of :class:`atelier.payments.store.PaymentsTable`."""

    def __init__(self) -> None:
        self.states: dict[str, tuple[dict[str, Any], int]] = {}
        self.customers: dict[str, str] = {}

    def load_state(self, pk: str) -> tuple[dict[str, Any] | None, int]:
        doc, version = self.states.get(pk, (None, 0))
        return copy.deepcopy(doc), version

    def save_state(self, pk: str, doc: dict[str, Any], *, version: int, entity: str, index: tuple[str, str]) -> int:
        if self.states.get(pk, (None, 0))[1] != version:
            raise VersionConflict(pk)
        self.states[pk] = (copy.deepcopy(doc), version + 1)
        return version + 1

    def remember_customer(self, customer_id: str, account_id: str) -> None:
        self.customers.setdefault(customer_id, account_id)

    def account_of_customer(self, customer_id: str) -> str | None:
        return self.customers.get(customer_id)


@dataclass
class FakeAccount:
    account_id: str
    plan: str = 'free'
    available: int = 0


@dataclass
class FakeLedger:
    """Books each business id once, like the real ledger (a repeat with other parameters is a conflict), and
    refuses to book credit that would already be expired."""

    accounts: dict[str, FakeAccount] = field(default_factory=dict)
    booked: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # business id -> (account, op, amount)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def open(self, account_id: str) -> str:
        self.accounts[account_id] = FakeAccount(account_id)
        return account_id

    def get_account(self, account_id: str) -> FakeAccount:
        if account_id not in self.accounts:
            raise AccountNotFound(f'no account {account_id}')
        return self.accounts[account_id]

    def grant(
        self, account_id: str, *, amount: int, kind: Any, business_id: str, expires_at: Any = None, memo: Any = None
    ) -> None:
        if business_id not in self.booked and expires_at is not None and expires_at <= self.clock():
            raise CreditExpired('the credit would already be expired')
        self._book(account_id, 'grant', amount, business_id)

    def claw_back(self, account_id: str, *, amount: int, business_id: str, reason: str, source: Any = None) -> None:
        self._book(account_id, 'claw_back', -amount, business_id)

    def set_plan(self, account_id: str, plan: str) -> None:
        self.get_account(account_id).plan = plan

    def _book(self, account_id: str, op: str, amount: int, business_id: str) -> None:
        account = self.get_account(account_id)
        if business_id in self.booked:
            if self.booked[business_id] != (account_id, op, amount):
                raise IdempotencyConflict(business_id)
            return
        self.booked[business_id] = (account_id, op, amount)
        account.available += amount


def make_book(now: datetime | None = None) -> tuple[PaymentBook, FakeLedger, FakeTable]:
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    ledger, table = FakeLedger(clock=clock), FakeTable()
    book = PaymentBook(table, ledger, ledger, load_commerce_catalog(), clock=clock, sleep=lambda _: None)  # type: ignore[arg-type]
    return book, ledger, table


class FakeInvoicePayments:
    """Stripe's ``GET /v1/invoice_payments`` in memory: invoice -> the PaymentIntent that paid it."""

    def __init__(self, paid: dict[str, str] | None = None) -> None:
        self.paid = dict(paid or {})
        self.asked: list[str] = []
        self.down = False

    def paid_payment_intent(self, invoice_id: str) -> str | None:
        from atelier.payments.errors import PaymentsUnavailable

        self.asked.append(invoice_id)
        if self.down:
            raise PaymentsUnavailable('Stripe is down (fake)')
        return self.paid.get(invoice_id)
