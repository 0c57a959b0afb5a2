"""Concurrency against Amazon DynamoDB Local: many threads on one account, a Jepsen-bank-style check.

Callers must only ever see success, ``InsufficientCredits`` or ``ConcurrencyLimitExceeded``; the final
balances and entries must be exact.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from atelier.ledger import ConcurrencyLimitExceeded, HoldClosed, InsufficientCredits, Ledger, LotKind
from tests.integration.ledger.conftest import Backend, FakeClock
from tests.support.dynamodb_local import DynamoDBLocal

pytestmark = pytest.mark.ddb_local

THREADS = 50
T = TypeVar('T')


@pytest.fixture
def ledger(dynamodb_local: DynamoDBLocal) -> Ledger:
    backend = Backend('ddb_local', dynamodb_local.client(), dynamodb_local.client)
    return backend.ledger(clock=FakeClock())


def race(count: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """Run ``work(i)`` for i in range(count) on as many threads, released together; results or exceptions."""
    barrier = threading.Barrier(count)

    def one(i: int) -> T | BaseException:
        barrier.wait()
        try:
            return work(i)
        except Exception as error:  # collected: the test asserts on every outcome
            return error

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def outcomes(results: list[Any]) -> Counter[str]:
    return Counter('ok' if not isinstance(r, BaseException) else type(r).__name__ for r in results)


def test_concurrency_50_holds_on_10_credits_exactly_10_succeed(ledger: Ledger) -> None:
    # Given an account with 10 credits
    ledger.open_account('acct')
    ledger.grant('acct', amount=10, kind=LotKind.PAID, business_id='paid:1')

    # When 50 tasks each hold 1 credit at the same moment
    results = race(THREADS, lambda i: ledger.hold('acct', task_id=f't{i}', amount=1))

    # Then exactly 10 succeed and 40 are told the credit is insufficient: no other outcome
    assert outcomes(results) == Counter({'InsufficientCredits': 40, 'ok': 10})
    account = ledger.get_account('acct')
    assert (account.available, account.held, account.open_holds) == (0, 10, 10)
    entries = ledger.list_entries('acct', limit=100).items
    assert len(entries) == 11 and sorted(e.seq for e in entries) == list(range(1, 12))
    report = ledger.reconcile('acct')
    assert report.ok, report


def test_concurrency_50_duplicate_grants_apply_once(ledger: Ledger) -> None:
    # Given an account
    ledger.open_account('acct')

    # When the same purchase webhook is delivered 50 times at once
    results = race(
        THREADS, lambda i: ledger.grant('acct', amount=100, kind=LotKind.PAID, business_id='stripe:checkout:cs_1')
    )

    # Then every delivery returns the same entry, and the credit is there once
    assert outcomes(results) == Counter({'ok': THREADS})
    assert len({r.seq for r in results if not isinstance(r, BaseException)}) == 1
    assert ledger.get_account('acct').available == 100
    assert [e.id for e in ledger.list_entries('acct').items] == ['stripe:checkout:cs_1']


def test_concurrency_limit_holds_at_most_max_open_holds(ledger: Ledger) -> None:
    # Given an account with plenty of credit and a plan that runs 5 tasks at once
    ledger.open_account('acct')
    ledger.grant('acct', amount=1000, kind=LotKind.PAID, business_id='paid:1')

    # When 50 tasks start at once
    results = race(THREADS, lambda i: ledger.hold('acct', task_id=f't{i}', amount=3, max_open_holds=5))

    # Then 5 hold and 45 are told to wait
    assert outcomes(results) == Counter({'ConcurrencyLimitExceeded': 45, 'ok': 5})
    account = ledger.get_account('acct')
    assert (account.available, account.held, account.open_holds) == (985, 15, 5)
    assert ledger.reconcile('acct').ok


def test_concurrency_mixed_spending_and_settling_balances_exactly(ledger: Ledger) -> None:
    # Given 40 credits and 20 open holds of 1
    ledger.open_account('acct')
    ledger.grant('acct', amount=40, kind=LotKind.PAID, business_id='paid:1')
    for i in range(20):
        ledger.hold('acct', task_id=f'old{i}', amount=1)

    # When 20 threads settle those holds (captures and releases racing each other on every hold)
    # while 30 others start new holds of 1
    def work(i: int) -> Any:
        if i < 40:
            task = f'old{i % 20}'
            return ledger.capture('acct', task_id=task, amount=1) if i < 20 else ledger.release('acct', task_id=task)
        return ledger.hold('acct', task_id=f'new{i}', amount=1)

    results = race(THREADS, work)

    # Then each old hold was settled exactly once (the loser of each race sees HoldClosed)
    settle = outcomes(results[:40])
    assert settle == Counter({'ok': 20, 'HoldClosed': 20})
    assert all(isinstance(r, HoldClosed) or not isinstance(r, BaseException) for r in results)
    assert all(
        not isinstance(r, BaseException) or isinstance(r, InsufficientCredits | ConcurrencyLimitExceeded | HoldClosed)
        for r in results
    )
    # And the books balance
    report = ledger.reconcile('acct')
    assert report.ok, report
    assert report.account.open_holds == sum(1 for r in results[40:] if not isinstance(r, BaseException))
