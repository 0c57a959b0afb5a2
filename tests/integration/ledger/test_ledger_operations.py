"""The ledger's operations on a real store: moto and Amazon DynamoDB Local run the same tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from atelier.errors import InvalidInput
from atelier.ledger import (
    MAX_AMOUNT,
    AccountNotFound,
    CaptureExceedsHold,
    ConcurrencyLimitExceeded,
    EntryKind,
    ExtraItemConditionFailed,
    GrantSpec,
    HoldClosed,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    InvalidCursor,
    Ledger,
    LotKind,
)
from tests.integration.ledger.conftest import Backend, FakeClock


def _table(ledger: Ledger) -> str:
    return ledger._store.table_name  # type: ignore[attr-defined,no-any-return]


def _balances(ledger: Ledger, account_id: str = 'acct') -> tuple[int, int]:
    account = ledger.get_account(account_id)
    return account.available, account.held


def _ids(ledger: Ledger, account_id: str = 'acct') -> list[str]:
    return [e.id for e in ledger.list_entries(account_id, limit=100).items]


def _assert_reconciled(ledger: Ledger, account_id: str = 'acct') -> None:
    report = ledger.reconcile(account_id)
    assert report.ok, report


@pytest.fixture
def funded(ledger: Ledger) -> Ledger:
    """An account 'acct' with 100 paid credits."""
    ledger.open_account('acct')
    ledger.grant('acct', amount=100, kind=LotKind.PAID, business_id='stripe:checkout:cs_1')
    return ledger


# ---------------------------------------------------------------- accounts and grants


def test_opening_an_account_with_welcome_credits_is_idempotent(ledger: Ledger, clock: FakeClock) -> None:
    # Given a welcome grant of 10 promo credits
    welcome = GrantSpec(
        amount=10, kind=LotKind.PROMO, business_id='welcome:acct', expires_at=clock.now + timedelta(days=30)
    )

    # When the account is opened twice
    first = ledger.open_account('acct', plan='free', welcome=welcome)
    second = ledger.open_account('acct', plan='free', welcome=welcome)

    # Then it exists once, with the welcome credits once
    assert first == second
    assert (first.available, first.held, first.plan) == (10, 0, 'free')
    assert _ids(ledger) == ['welcome:acct']
    _assert_reconciled(ledger)


def test_opening_writes_the_callers_extra_items_in_the_same_transaction(
    ledger: Ledger, ledger_backend: Backend
) -> None:
    # Given a device mapping the caller wants written with the account
    table = _table(ledger)
    device = {
        'Put': {
            'TableName': table,
            'Item': {'pk': {'S': 'DEVICE#d1'}, 'sk': {'S': 'DEVICE'}, 'account_id': {'S': 'acct'}},
            'ConditionExpression': 'attribute_not_exists(pk)',
        }
    }

    # When the account is opened with it
    ledger.open_account('acct', extra_items=[device])

    # Then both exist
    item = ledger_backend.client.get_item(TableName=table, Key={'pk': {'S': 'DEVICE#d1'}, 'sk': {'S': 'DEVICE'}})
    assert item['Item']['account_id'] == {'S': 'acct'}

    # And a second account claiming the same device fails on that item, writing nothing
    with pytest.raises(ExtraItemConditionFailed) as raised:
        ledger.open_account('other', extra_items=[device])
    assert raised.value.index == 0
    with pytest.raises(AccountNotFound):
        ledger.get_account('other')


def test_a_grant_applies_once_however_often_it_is_delivered(funded: Ledger) -> None:
    # Given an account with 100 credits from checkout cs_1
    # When the same webhook delivers the grant again
    again = funded.grant('acct', amount=100, kind=LotKind.PAID, business_id='stripe:checkout:cs_1')

    # Then the same entry comes back and the balance is unchanged
    assert again.id == 'stripe:checkout:cs_1' and again.amount == 100 and again.seq == 1
    assert _balances(funded) == (100, 0)
    assert _ids(funded) == ['stripe:checkout:cs_1']


def test_the_same_business_id_with_other_parameters_is_a_conflict(funded: Ledger) -> None:
    # When cs_1 comes again with another amount / Then it is a conflict and nothing changes
    with pytest.raises(IdempotencyConflict) as raised:
        funded.grant('acct', amount=500, kind=LotKind.PAID, business_id='stripe:checkout:cs_1')
    assert raised.value.kind.value == 'conflict'
    assert _balances(funded) == (100, 0)


def test_an_unknown_account_is_not_found(ledger: Ledger) -> None:
    with pytest.raises(AccountNotFound):
        ledger.grant('ghost', amount=1, kind=LotKind.PAID, business_id='x')
    with pytest.raises(AccountNotFound):
        ledger.hold('ghost', task_id='t', amount=1)
    with pytest.raises(AccountNotFound):
        ledger.get_account('ghost')


@pytest.mark.parametrize('amount', [0, -5, MAX_AMOUNT + 1])
def test_bad_amounts_are_refused_and_nothing_is_written(funded: Ledger, amount: int) -> None:
    # When each operation gets a bad amount / Then each is refused with a clear error
    with pytest.raises(InvalidAmount):
        funded.grant('acct', amount=amount, kind=LotKind.PAID, business_id='g2')
    with pytest.raises(InvalidAmount):
        funded.hold('acct', task_id='t1', amount=amount)
    with pytest.raises(InvalidAmount):
        funded.claw_back('acct', amount=amount, business_id='r1', reason='refund')
    funded.hold('acct', task_id='t2', amount=5)
    with pytest.raises(InvalidAmount):
        funded.capture('acct', task_id='t2', amount=amount)

    # And nothing but the one valid hold was written
    assert _balances(funded) == (95, 5)
    assert _ids(funded) == ['task:t2:hold', 'stripe:checkout:cs_1']


def test_adjust_zero_is_refused(funded: Ledger) -> None:
    with pytest.raises(InvalidAmount):
        funded.adjust('acct', amount=0, business_id='ops:1', reason='typo', actor='ops@example.com')


# ---------------------------------------------------------------- holds and settlement


def test_hold_then_partial_capture_returns_the_rest(funded: Ledger) -> None:
    # Given a hold of 30
    hold = funded.hold('acct', task_id='t1', amount=30)
    assert _balances(funded) == (70, 30)

    # When 12 are captured
    settlement = funded.capture('acct', task_id='t1', amount=12)

    # Then 12 are spent and 18 are back
    assert (settlement.held, settlement.captured, settlement.released, settlement.expired) == (30, 12, 18, 0)
    assert _balances(funded) == (88, 0)
    assert funded.get_account('acct').open_holds == 0
    assert hold.legs[0].amount == 30
    _assert_reconciled(funded)


def test_a_repeated_hold_returns_the_first_hold_even_after_the_balance_changed(funded: Ledger) -> None:
    # Given a hold of 60, after which the rest of the credit was held by another task
    first = funded.hold('acct', task_id='t1', amount=60)
    funded.hold('acct', task_id='t2', amount=40)

    # When the first hold is retried
    again = funded.hold('acct', task_id='t1', amount=60)

    # Then it is the same hold, not "insufficient credits", and nothing more is held
    assert again == first
    assert _balances(funded) == (0, 100)


def test_a_hold_for_the_same_task_with_another_amount_is_a_conflict(funded: Ledger) -> None:
    funded.hold('acct', task_id='t1', amount=10)
    with pytest.raises(IdempotencyConflict):
        funded.hold('acct', task_id='t1', amount=11)


def test_a_hold_is_settled_at_most_once(funded: Ledger) -> None:
    # Given a captured hold
    funded.hold('acct', task_id='t1', amount=10)
    captured = funded.capture('acct', task_id='t1', amount=7)

    # When the capture is retried / Then the first result comes back
    assert funded.capture('acct', task_id='t1', amount=7) == captured
    # When a release or another capture follows / Then they are conflicts
    with pytest.raises(HoldClosed):
        funded.release('acct', task_id='t1')
    with pytest.raises(IdempotencyConflict):
        funded.capture('acct', task_id='t1', amount=8)

    # And the balance shows one capture of 7
    assert _balances(funded) == (93, 0)
    _assert_reconciled(funded)


def test_a_released_hold_cannot_be_captured(funded: Ledger) -> None:
    funded.hold('acct', task_id='t1', amount=10)
    released = funded.release('acct', task_id='t1')
    assert released.released == 10 and released.kind is EntryKind.RELEASE
    assert funded.release('acct', task_id='t1') == released
    with pytest.raises(HoldClosed):
        funded.capture('acct', task_id='t1', amount=1)
    assert _balances(funded) == (100, 0)


def test_capture_above_the_hold_or_of_an_unknown_hold_is_refused(funded: Ledger) -> None:
    funded.hold('acct', task_id='t1', amount=10)
    with pytest.raises(CaptureExceedsHold):
        funded.capture('acct', task_id='t1', amount=11)
    with pytest.raises(HoldNotFound):
        funded.capture('acct', task_id='nope', amount=1)
    with pytest.raises(HoldNotFound):
        funded.release('acct', task_id='nope')
    assert _balances(funded) == (90, 10)


def test_insufficient_credits_and_the_concurrency_limit(funded: Ledger) -> None:
    # Given 100 credits
    # When 101 are asked for / Then it is a payment-required error and nothing is held
    with pytest.raises(InsufficientCredits) as raised:
        funded.hold('acct', task_id='big', amount=101)
    assert raised.value.code == 'insufficient_credits'

    # When a plan allows 2 running tasks / Then the third hold is refused as a rate limit
    funded.hold('acct', task_id='t1', amount=1, max_open_holds=2)
    funded.hold('acct', task_id='t2', amount=1, max_open_holds=2)
    with pytest.raises(ConcurrencyLimitExceeded):
        funded.hold('acct', task_id='t3', amount=1, max_open_holds=2)

    # And once one is released the next one fits
    funded.release('acct', task_id='t1')
    funded.hold('acct', task_id='t3', amount=1, max_open_holds=2)
    assert _balances(funded) == (98, 2)


def test_a_failed_hold_is_not_remembered(funded: Ledger) -> None:
    # Given a hold refused for lack of credit
    with pytest.raises(InsufficientCredits):
        funded.hold('acct', task_id='t1', amount=150)

    # When credit arrives and the same task is held again / Then it succeeds
    funded.grant('acct', amount=100, kind=LotKind.PAID, business_id='stripe:checkout:cs_2')
    assert funded.hold('acct', task_id='t1', amount=150).amount == 150


def test_hold_writes_the_task_in_the_same_transaction(funded: Ledger, ledger_backend: Backend) -> None:
    # Given a task item and an idempotency record to write with the hold
    table = _table(funded)

    def task_items(task_id: str, key: str) -> list[dict[str, Any]]:
        return [
            {
                'Put': {
                    'TableName': table,
                    'Item': {'pk': {'S': f'TASK#{task_id}'}, 'sk': {'S': 'TASK'}},
                    'ConditionExpression': 'attribute_not_exists(pk)',
                }
            },
            {
                'Put': {
                    'TableName': table,
                    'Item': {'pk': {'S': f'IDEM#{key}'}, 'sk': {'S': 'IDEM'}, 'task_id': {'S': task_id}},
                    'ConditionExpression': 'attribute_not_exists(pk)',
                    'ReturnValuesOnConditionCheckFailure': 'ALL_OLD',
                }
            },
        ]

    # When the task is created with its hold
    funded.hold('acct', task_id='t1', amount=10, extra_items=task_items('t1', 'k1'))

    # Then the task exists, and a retry of the same creation returns the same hold
    got = ledger_backend.client.get_item(TableName=table, Key={'pk': {'S': 'TASK#t1'}, 'sk': {'S': 'TASK'}})
    assert 'Item' in got
    assert funded.hold('acct', task_id='t1', amount=10, extra_items=task_items('t1', 'k1')).amount == 10

    # When another task reuses the idempotency key / Then its second extra item fails and nothing is held
    with pytest.raises(ExtraItemConditionFailed) as raised:
        funded.hold('acct', task_id='t2', amount=10, extra_items=task_items('t2', 'k1'))
    assert raised.value.index == 1
    assert raised.value.item is not None and raised.value.item['task_id'] == {'S': 't1'}
    assert _balances(funded) == (90, 10)
    with pytest.raises(HoldNotFound):
        funded.release('acct', task_id='t2')


# ---------------------------------------------------------------- lots, expiry, claw-backs


def test_spending_uses_expiring_credit_first_and_release_restores_the_same_lots(
    ledger: Ledger, clock: FakeClock
) -> None:
    # Given 50 paid, 20 promo expiring in 7 days, 30 subscription expiring in 3 days
    ledger.open_account('acct')
    ledger.grant('acct', amount=50, kind=LotKind.PAID, business_id='paid:1')
    ledger.grant('acct', amount=20, kind=LotKind.PROMO, business_id='promo:1', expires_at=clock.now + timedelta(days=7))
    ledger.grant(
        'acct',
        amount=30,
        kind=LotKind.SUBSCRIPTION,
        business_id='grant:pro:2026-01',
        expires_at=clock.now + timedelta(days=3),
    )

    # When 60 are held
    hold = ledger.hold('acct', task_id='t1', amount=60)

    # Then 30 subscription, 20 promo and 10 paid were taken
    sources = {lot.lot_id: lot.source for lot in ledger.list_lots('acct', open_only=False)}
    assert [(sources[leg.lot_id], leg.amount) for leg in hold.legs] == [
        ('grant:pro:2026-01', 30),
        ('promo:1', 20),
        ('paid:1', 10),
    ]

    # And a release puts every credit back into its own lot
    ledger.release('acct', task_id='t1')
    assert {lot.source: lot.remaining for lot in ledger.list_lots('acct')} == {
        'grant:pro:2026-01': 30,
        'promo:1': 20,
        'paid:1': 50,
    }
    _assert_reconciled(ledger)


def test_expired_credit_is_unspendable_before_the_job_and_booked_out_by_it(ledger: Ledger, clock: FakeClock) -> None:
    # Given 10 paid credits and 20 promo credits expiring in a day
    ledger.open_account('acct')
    ledger.grant('acct', amount=10, kind=LotKind.PAID, business_id='paid:1')
    ledger.grant('acct', amount=20, kind=LotKind.PROMO, business_id='promo:1', expires_at=clock.now + timedelta(days=1))

    # When two days pass without the expiry job
    clock.advance(days=2)

    # Then a hold of 15 is refused although the balance still shows 30
    assert _balances(ledger) == (30, 0)
    with pytest.raises(InsufficientCredits):
        ledger.hold('acct', task_id='t1', amount=15)

    # When the job runs (twice)
    booked = ledger.expire(clock.now)
    assert ledger.expire(clock.now) == []

    # Then the 20 promo credits are booked out once
    assert [(e.kind, e.amount) for e in booked] == [(EntryKind.EXPIRE, -20)]
    assert _balances(ledger) == (10, 0)
    _assert_reconciled(ledger)


def test_credit_that_expires_while_held_stays_with_its_hold(ledger: Ledger, clock: FakeClock) -> None:
    # Given a hold of 15 that took 10 promo credits (expiring in an hour) and 5 paid
    ledger.open_account('acct')
    ledger.grant('acct', amount=20, kind=LotKind.PAID, business_id='paid:1')
    ledger.grant(
        'acct', amount=10, kind=LotKind.PROMO, business_id='promo:1', expires_at=clock.now + timedelta(hours=1)
    )
    ledger.hold('acct', task_id='t1', amount=15)
    ledger.hold('acct', task_id='t2', amount=5)

    # When the promo expires and the job runs
    clock.advance(hours=2)
    assert ledger.expire(clock.now) == []  # nothing unused to book out: all of it is held

    # Then t1 may still spend the promo credit it holds
    spent = ledger.capture('acct', task_id='t1', amount=12)
    assert (spent.captured, spent.released, spent.expired) == (12, 3, 0)

    # And the rest of it went back to the paid lot
    assert _balances(ledger) == (13, 5)
    _assert_reconciled(ledger)


def test_a_release_after_expiry_books_the_expired_part_out(ledger: Ledger, clock: FakeClock) -> None:
    # Given a hold of 8 taking 5 promo (expiring in an hour) and 3 paid credits
    ledger.open_account('acct')
    ledger.grant('acct', amount=3, kind=LotKind.PAID, business_id='paid:1')
    ledger.grant('acct', amount=5, kind=LotKind.PROMO, business_id='promo:1', expires_at=clock.now + timedelta(hours=1))
    ledger.hold('acct', task_id='t1', amount=8)

    # When the task fails after the expiry
    clock.advance(hours=2)
    released = ledger.release('acct', task_id='t1')

    # Then the paid credit comes back and the promo credit is booked out as expired
    assert (released.released, released.expired) == (3, 5)
    assert _balances(ledger) == (3, 0)
    assert ledger.expire(clock.now) == []
    _assert_reconciled(ledger)


def test_a_claw_back_may_push_the_balance_below_zero_and_blocks_new_holds(funded: Ledger) -> None:
    # Given 100 credits of which 70 were spent
    funded.hold('acct', task_id='t1', amount=70)
    funded.capture('acct', task_id='t1', amount=70)

    # When the purchase is refunded
    entry = funded.claw_back(
        'acct', amount=100, business_id='stripe:refund:re_1', reason='refund', source='stripe:checkout:cs_1'
    )

    # Then the account owes 70 and cannot start a task
    assert (entry.kind, entry.amount) == (EntryKind.CLAW_BACK, -100)
    account = funded.get_account('acct')
    assert (account.available, account.owed) == (-70, 70)
    with pytest.raises(InsufficientCredits):
        funded.hold('acct', task_id='t2', amount=1)

    # And the refund webhook's retry changes nothing
    funded.claw_back(
        'acct', amount=100, business_id='stripe:refund:re_1', reason='refund', source='stripe:checkout:cs_1'
    )
    assert funded.get_account('acct').available == -70

    # When 100 credits are bought / Then the debt is paid first
    funded.grant('acct', amount=100, kind=LotKind.PAID, business_id='stripe:checkout:cs_2')
    account = funded.get_account('acct')
    assert (account.available, account.owed) == (30, 0)
    funded.hold('acct', task_id='t2', amount=30)
    _assert_reconciled(funded)


def test_adjustments_add_or_take_credit_with_an_actor(funded: Ledger) -> None:
    plus = funded.adjust('acct', amount=25, business_id='ops:1', reason='goodwill', actor='ops@example.com')
    minus = funded.adjust('acct', amount=-5, business_id='ops:2', reason='duplicate', actor='ops@example.com')
    assert (plus.kind, plus.amount, plus.actor, plus.reference) == (EntryKind.ADJUST, 25, 'ops@example.com', 'goodwill')
    assert minus.amount == -5
    assert _balances(funded) == (120, 0)
    with pytest.raises(InvalidInput):
        funded.adjust('acct', amount=5, business_id='ops:3', reason='', actor='ops@example.com')
    _assert_reconciled(funded)


def test_a_grant_that_expires_needs_an_expiry(funded: Ledger) -> None:
    with pytest.raises(InvalidInput):
        funded.grant('acct', amount=5, kind=LotKind.PROMO, business_id='promo:x')
    with pytest.raises(InvalidInput):
        funded.grant('acct', amount=5, kind=LotKind.PAID, business_id='paid:x', expires_at=funded._clock())


# ---------------------------------------------------------------- listing


def test_entries_are_listed_newest_first_in_pages(funded: Ledger) -> None:
    # Given 1 grant and 6 more entries
    for n in range(3):
        funded.hold('acct', task_id=f't{n}', amount=1)
        funded.release('acct', task_id=f't{n}')

    # When they are read 3 at a time
    pages = []
    cursor = None
    while True:
        page = funded.list_entries('acct', limit=3, cursor=cursor)
        pages.append([e.id for e in page.items])
        cursor = page.next_cursor
        if cursor is None:
            break

    # Then every entry comes once, newest first, and the last page says there is no more
    assert pages == [
        ['task:t2:release', 'task:t2:hold', 'task:t1:release'],
        ['task:t1:hold', 'task:t0:release', 'task:t0:hold'],
        ['stripe:checkout:cs_1'],
    ]
    first = funded.list_entries('acct', limit=1).items[0]
    assert (first.kind, first.amount, first.held_delta, first.task_id, first.seq) == (
        EntryKind.RELEASE,
        1,
        -1,
        't2',
        7,
    )


def test_a_tampered_or_foreign_cursor_is_refused(funded: Ledger) -> None:
    # Given a cursor issued for 'acct'
    funded.hold('acct', task_id='t1', amount=1)
    cursor = funded.list_entries('acct', limit=1).next_cursor
    assert cursor is not None
    funded.open_account('other')

    # When it is altered or used for another account / Then it is a bad request
    payload, signature = cursor.split('.')
    for bad in [f'{payload}x.{signature}', f'{payload}.{signature[:-1]}A', 'garbage', f'{payload}.', 'abc.\u00e9']:
        with pytest.raises(InvalidCursor) as raised:
            funded.list_entries('acct', cursor=bad)
        assert raised.value.kind.value == 'bad_request'
    with pytest.raises(InvalidCursor):
        funded.list_entries('other', cursor=cursor)
    with pytest.raises(InvalidInput):
        funded.list_entries('acct', limit=0)


def test_set_plan_changes_the_plan_and_nothing_else(funded: Ledger) -> None:
    # Given an account with 100 credits on the free plan
    # When it moves to pro
    account = funded.set_plan('acct', 'pro')

    # Then the plan changes, the balances and entries do not, and later balance changes keep the plan
    assert (account.plan, account.available) == ('pro', 100)
    funded.hold('acct', task_id='t1', amount=5)
    assert funded.get_account('acct').plan == 'pro'
    _assert_reconciled(funded)
    with pytest.raises(AccountNotFound):
        funded.set_plan('ghost', 'pro')
