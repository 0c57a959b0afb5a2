"""Crash points: the transaction commits but the caller never sees the answer.

A botocore ``after-call`` hook raises once the real TransactWriteItems has succeeded: the answer is lost
exactly where a Lambda timeout or a dropped connection would lose it. A retry must find the operation
applied once and return its first result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from atelier.ledger import DynamoDBLedgerStore, Ledger, LotKind
from tests.integration.ledger.conftest import Backend, FakeClock


class Crash(Exception):
    """The process died right after the commit (a Lambda timeout, an out-of-memory kill)."""


def crash_after_commit(client: Any, error: Callable[[], Exception], times: int = 1) -> list[int]:
    """Make the next ``times`` successful TransactWriteItems calls on ``client`` raise ``error()`` afterwards."""
    crashes: list[int] = []

    def after_call(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        if 'Error' not in parsed and len(crashes) < times:
            crashes.append(1)
            raise error()

    client.meta.events.register('after-call.dynamodb.TransactWriteItems', after_call)
    return crashes


def _ledgers(backend: Backend, clock: FakeClock, error: Callable[[], Exception]) -> tuple[Ledger, Ledger, list[int]]:
    """A ledger whose first commit 'crashes', and a clean one on the same table (the next invocation)."""
    table = backend.new_table()
    crashing_client = backend.make_client()
    crashes = crash_after_commit(crashing_client, error)
    crashing = Ledger(DynamoDBLedgerStore(crashing_client, table), clock=clock, backoff_base=0.001)
    clean = Ledger(DynamoDBLedgerStore(backend.client, table), clock=clock, backoff_base=0.001)
    clean.open_account('acct')
    clean.grant('acct', amount=50, kind=LotKind.PAID, business_id='paid:1')
    return crashing, clean, crashes


OPERATIONS: dict[str, Callable[[Ledger], Any]] = {
    'grant': lambda ledger: ledger.grant('acct', amount=20, kind=LotKind.PAID, business_id='stripe:checkout:cs_9'),
    'hold': lambda ledger: ledger.hold('acct', task_id='t9', amount=30),
    'capture': lambda ledger: ledger.capture('acct', task_id='t1', amount=4),
    'release': lambda ledger: ledger.release('acct', task_id='t1'),
    'claw_back': lambda ledger: ledger.claw_back('acct', amount=60, business_id='stripe:refund:re_9', reason='refund'),
}


@pytest.mark.parametrize('operation', sorted(OPERATIONS))
def test_an_operation_whose_answer_is_lost_is_retried_by_the_ledger_and_applied_once(
    ledger_backend: Backend, clock: FakeClock, operation: str
) -> None:
    # Given a ledger whose next commit loses its answer (a read timeout after DynamoDB applied it)
    crashing, clean, crashes = _ledgers(
        ledger_backend, clock, lambda: ReadTimeoutError(endpoint_url='https://dynamodb.example')
    )
    clean.hold('acct', task_id='t1', amount=10)
    version_before = clean.reconcile('acct').account_version

    # When the operation runs on it
    result = OPERATIONS[operation](crashing)

    # Then the ledger's own retry found it applied: one entry more, and a retry returns the same result
    assert crashes == [1]
    report = clean.reconcile('acct')
    assert report.ok, report
    assert report.account_version == version_before + 1
    assert OPERATIONS[operation](clean) == result


@pytest.mark.parametrize('operation', sorted(OPERATIONS))
def test_an_operation_whose_caller_died_after_the_commit_is_applied_once_on_retry(
    ledger_backend: Backend, clock: FakeClock, operation: str
) -> None:
    # Given a ledger whose process dies right after its next commit
    crashing, clean, _ = _ledgers(ledger_backend, clock, lambda: Crash('killed after commit'))
    clean.hold('acct', task_id='t1', amount=10)
    before = clean.get_account('acct')

    # When the operation runs and the caller dies without an answer
    with pytest.raises(Crash):
        OPERATIONS[operation](crashing)
    applied = clean.get_account('acct')
    assert applied != before  # it did commit

    # Then the next invocation's retry returns the result and changes nothing more
    first = OPERATIONS[operation](clean)
    second = OPERATIONS[operation](clean)
    assert first == second
    assert clean.get_account('acct') == applied
    report = clean.reconcile('acct')
    assert report.ok, report
