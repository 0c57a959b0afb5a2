"""The ledger's rules, without any store: spending order, holds, settlement, claw-backs, expiry."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from atelier.errors import InvalidInput
from atelier.ledger import rules
from atelier.ledger.errors import (
    CaptureExceedsHold,
    ConcurrencyLimitExceeded,
    InsufficientCredits,
    InvalidAmount,
    TooManyLots,
)
from atelier.ledger.models import AccountState, EntryKind, HoldState, HoldStatus, LegEffect, LotKind, LotState

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
P = rules.params('test')


def lot(
    lot_id: str,
    remaining: int,
    *,
    kind: LotKind = LotKind.PAID,
    expires_in: timedelta | None = None,
    age: timedelta = timedelta(days=1),
    held: int = 0,
) -> LotState:
    return LotState(
        account_id='acct',
        lot_id=lot_id,
        kind=kind,
        source=f'grant:{lot_id}',
        granted=remaining + held,
        remaining=remaining,
        held=held,
        used=0,
        expired=0,
        clawed=0,
        expires_at=NOW + expires_in if expires_in is not None else None,
        created_at=NOW - age,
        expiry_booked_at=None,
        version=1,
    )


def account(available: int, *, owed: int = 0, open_holds: int = 0, held: int = 0) -> AccountState:
    return replace(
        rules.new_account('acct', 'free', NOW), available=available, owed=owed, open_holds=open_holds, held=held
    )


# ---------------------------------------------------------------- spending order


def test_spending_takes_the_soonest_expiry_first_and_never_expiring_credit_last() -> None:
    # Given a paid lot (no expiry), a promo expiring in 10 days and a subscription expiring in 2
    lots = [
        lot('paid', 5),
        lot('promo', 5, kind=LotKind.PROMO, expires_in=timedelta(days=10)),
        lot('sub', 5, kind=LotKind.SUBSCRIPTION, expires_in=timedelta(days=2)),
    ]

    # When they are put in spending order
    order = [x.lot_id for x in rules.spendable_lots(lots, NOW)]

    # Then the subscription goes first, then the promo, and the paid credit last
    assert order == ['sub', 'promo', 'paid']


def test_ties_in_expiry_go_to_the_oldest_lot() -> None:
    # Given two paid lots and two promos expiring at the same moment, created at different times
    lots = [
        lot('paid-new', 1, age=timedelta(hours=1)),
        lot('paid-old', 1, age=timedelta(days=3)),
        lot('promo-new', 1, kind=LotKind.PROMO, expires_in=timedelta(days=1), age=timedelta(hours=1)),
        lot('promo-old', 1, kind=LotKind.PROMO, expires_in=timedelta(days=1), age=timedelta(days=3)),
    ]

    # When ordered / Then the older of each pair comes first
    assert [x.lot_id for x in rules.spendable_lots(lots, NOW)] == ['promo-old', 'promo-new', 'paid-old', 'paid-new']


def test_expired_and_empty_lots_are_never_spendable() -> None:
    # Given a lot that expired a second ago (not yet booked out), one expiring exactly now, and an empty lot
    lots = [
        lot('gone', 5, kind=LotKind.PROMO, expires_in=timedelta(seconds=-1)),
        lot('now', 5, kind=LotKind.PROMO, expires_in=timedelta(0)),
        lot('empty', 0, held=3),
        lot('paid', 2),
    ]

    # When / Then only the paid lot can be spent
    assert [x.lot_id for x in rules.spendable_lots(lots, NOW)] == ['paid']
    assert rules.spendable_amount(lots, NOW) == 2


# ---------------------------------------------------------------- holds


def test_a_hold_takes_lots_in_spending_order_and_records_its_legs() -> None:
    # Given 3 promo credits expiring soon and 10 paid
    lots = [lot('paid', 10), lot('promo', 3, kind=LotKind.PROMO, expires_in=timedelta(days=1))]

    # When 5 are held
    change = rules.plan_hold(account(13), lots, task_id='t1', amount=5, now=NOW, op_params=P)

    # Then the promo is emptied first and 2 come from the paid lot; the account moves 5 to held
    assert change.hold is not None
    assert [(leg.lot_id, leg.amount) for leg in change.hold.after.legs] == [('promo', 3), ('paid', 2)]
    assert {w.after.lot_id: (w.after.remaining, w.after.held) for w in change.lots} == {
        'promo': (0, 3),
        'paid': (8, 2),
    }
    assert change.account_after is not None
    assert (change.account_after.available, change.account_after.held, change.account_after.open_holds) == (8, 5, 1)
    assert change.entry is not None
    assert (change.entry.entry.id, change.entry.entry.amount, change.entry.entry.held_delta) == ('task:t1:hold', -5, 5)


def test_a_hold_cannot_spend_expired_credit_even_before_the_expiry_job() -> None:
    # Given 10 promo credits that expired yesterday (still counted in available) and 2 paid
    lots = [lot('paid', 2), lot('promo', 10, kind=LotKind.PROMO, expires_in=timedelta(days=-1))]

    # When 5 are asked for / Then the hold is refused
    with pytest.raises(InsufficientCredits) as raised:
        rules.plan_hold(account(12), lots, task_id='t1', amount=5, now=NOW, op_params=P)
    assert raised.value.details == {'required': 5, 'available': 2}
    assert raised.value.kind.value == 'payment_required'


def test_an_account_that_owes_cannot_hold() -> None:
    # Given an account that owes 3 after a claw-back
    # When it asks for a hold / Then it is refused as insufficient
    with pytest.raises(InsufficientCredits):
        rules.plan_hold(account(-3, owed=3), [], task_id='t1', amount=1, now=NOW, op_params=P)


def test_the_open_hold_limit_is_enforced() -> None:
    # Given an account with 2 open holds and credit to spare
    # When a third is asked for with a limit of 2 / Then it is refused as a concurrency limit
    with pytest.raises(ConcurrencyLimitExceeded) as raised:
        rules.plan_hold(
            account(10, open_holds=2), [lot('paid', 10)], task_id='t', amount=1, now=NOW, op_params=P, max_open_holds=2
        )
    assert raised.value.code == 'concurrency_limit'


def test_a_hold_spanning_too_many_lots_is_refused() -> None:
    # Given 5 lots of 1 credit
    lots = [lot(f'l{i}', 1, age=timedelta(minutes=i)) for i in range(5)]

    # When 5 are held with room for only 4 lots / Then it is refused
    with pytest.raises(TooManyLots):
        rules.plan_hold(account(5), lots, task_id='t', amount=5, now=NOW, op_params=P, max_legs=4)


# ---------------------------------------------------------------- settlement


def _held(lots: list[LotState], amount: int) -> tuple[AccountState, dict[str, LotState], HoldState]:
    change = rules.plan_hold(
        account(sum(x.remaining for x in lots)), lots, task_id='t', amount=amount, now=NOW, op_params=P
    )
    assert change.hold is not None and change.account_after is not None
    return change.account_after, {w.after.lot_id: w.after for w in change.lots}, change.hold.after


def test_a_capture_spends_in_taking_order_and_returns_the_rest_to_the_longest_lived_lot() -> None:
    # Given a hold of 8 that took 3 promo and 5 paid credits
    acct, lots, hold = _held([lot('paid', 10), lot('promo', 3, kind=LotKind.PROMO, expires_in=timedelta(days=1))], 8)

    # When 4 are captured
    change = rules.plan_settle(acct, lots, hold, capture=4, now=NOW, op_params=P)

    # Then the promo is spent, 1 paid is spent and 4 paid go back; the hold is closed
    after = {w.after.lot_id: w.after for w in change.lots}
    assert (after['promo'].remaining, after['promo'].held, after['promo'].used) == (0, 0, 3)
    assert (after['paid'].remaining, after['paid'].held, after['paid'].used) == (9, 0, 1)
    assert change.account_after is not None
    assert (change.account_after.available, change.account_after.held, change.account_after.open_holds) == (9, 0, 0)
    assert change.hold is not None and change.hold.after.status is HoldStatus.CAPTURED
    assert change.entry is not None
    entry = change.entry.entry
    assert (entry.kind, entry.amount, entry.held_delta, entry.captured) == (EntryKind.CAPTURE, 4, -8, 4)
    assert all(w.after.balanced for w in change.lots)


def test_a_release_gives_everything_back_to_the_lots_it_came_from() -> None:
    # Given a hold of 8 across two lots
    acct, lots, hold = _held([lot('paid', 10), lot('promo', 3, kind=LotKind.PROMO, expires_in=timedelta(days=1))], 8)

    # When it is released
    change = rules.plan_settle(acct, lots, hold, capture=0, now=NOW, op_params=P)

    # Then both lots are whole again
    assert {w.after.lot_id: (w.after.remaining, w.after.held) for w in change.lots} == {
        'promo': (3, 0),
        'paid': (10, 0),
    }
    assert change.entry is not None and change.entry.entry.kind is EntryKind.RELEASE
    assert change.hold is not None and change.hold.after.status is HoldStatus.RELEASED


def test_held_credit_of_a_lot_that_expired_is_booked_out_when_it_comes_back() -> None:
    # Given a hold that took 3 credits of a promo expiring in an hour and 2 paid
    acct, lots, hold = _held([lot('paid', 10), lot('promo', 3, kind=LotKind.PROMO, expires_in=timedelta(hours=1))], 5)

    # When it is released two hours later
    change = rules.plan_settle(acct, lots, hold, capture=0, now=NOW + timedelta(hours=2), op_params=P)

    # Then the paid credit comes back but the promo credit is booked out as expired
    after = {w.after.lot_id: w.after for w in change.lots}
    assert (after['promo'].remaining, after['promo'].expired) == (0, 3)
    assert after['paid'].remaining == 10
    assert change.entry is not None
    assert (change.entry.entry.amount, change.entry.entry.expired) == (2, 3)
    assert change.account_after is not None and change.account_after.available == 10


def test_a_capture_may_still_spend_held_credit_of_an_expired_lot() -> None:
    # Given a hold of 3 promo credits that expire before the task finishes
    acct, lots, hold = _held([lot('promo', 3, kind=LotKind.PROMO, expires_in=timedelta(hours=1))], 3)

    # When 2 are captured after the expiry
    change = rules.plan_settle(acct, lots, hold, capture=2, now=NOW + timedelta(hours=2), op_params=P)

    # Then 2 are spent and the third is booked out as expired
    promo = change.lots[0].after
    assert (promo.used, promo.expired, promo.remaining, promo.held) == (2, 1, 0, 0)


def test_a_capture_above_the_hold_is_refused() -> None:
    acct, lots, hold = _held([lot('paid', 10)], 5)
    with pytest.raises(CaptureExceedsHold):
        rules.plan_settle(acct, lots, hold, capture=6, now=NOW, op_params=P)


def test_credit_coming_back_while_the_account_owes_pays_the_debt_first() -> None:
    # Given a hold of 5, after which a claw-back left the account owing 2
    acct, lots, hold = _held([lot('paid', 5)], 5)
    acct = replace(acct, available=-2, owed=2)

    # When the hold is released
    change = rules.plan_settle(acct, lots, hold, capture=0, now=NOW, op_params=P)

    # Then 2 of the 5 pay the debt and 3 land back in the lot
    assert change.account_after is not None
    assert (change.account_after.available, change.account_after.owed) == (3, 0)
    paid = change.lots[0].after
    assert (paid.remaining, paid.used) == (3, 2)
    assert [(leg.effect, leg.amount) for leg in change.entry.entry.legs] == [  # type: ignore[union-attr]
        (LegEffect.RETURN, 3),
        (LegEffect.REPAY, 2),
    ]


# ---------------------------------------------------------------- grants, claw-backs, expiry


def test_a_grant_pays_what_the_account_owes_first() -> None:
    # Given an account owing 30
    # When 100 credits are granted
    change = rules.plan_grant(
        account(-30, owed=30),
        amount=100,
        kind=LotKind.PAID,
        business_id='stripe:1',
        expires_at=None,
        now=NOW,
        op_params=P,
    )

    # Then the new lot keeps 70 and the account is at 70 and owes nothing
    assert change.lots[0].after.remaining == 70 and change.lots[0].after.used == 30
    assert change.account_after is not None
    assert (change.account_after.available, change.account_after.owed) == (70, 0)
    assert change.entry is not None and change.entry.entry.repaid == 30


def test_an_already_expired_grant_is_refused() -> None:
    with pytest.raises(InvalidInput):
        rules.plan_grant(
            account(0),
            amount=5,
            kind=LotKind.PROMO,
            business_id='promo:1',
            expires_at=NOW,
            now=NOW,
            op_params=P,
        )


def test_a_claw_back_takes_remaining_credit_then_leaves_a_debt() -> None:
    # Given 4 promo and 6 paid credits, 3 of the paid ones held
    lots = [lot('paid', 6, held=3), lot('promo', 4, kind=LotKind.PROMO, expires_in=timedelta(days=1))]

    # When 15 are clawed back
    change = rules.plan_debit(
        account(10, held=3), lots, amount=15, business_id='refund:1', kind=EntryKind.CLAW_BACK, now=NOW, op_params=P
    )

    # Then both lots' remaining credit is taken, the held credit is untouched, and 5 are owed
    after = {w.after.lot_id: w.after for w in change.lots}
    assert (after['promo'].remaining, after['paid'].remaining, after['paid'].held) == (0, 0, 3)
    assert change.account_after is not None
    assert (change.account_after.available, change.account_after.owed) == (-5, 5)


def test_a_claw_back_takes_from_the_refunded_purchase_first() -> None:
    # Given two paid lots, the newer being the refunded purchase
    lots = [lot('old', 10, age=timedelta(days=5)), lot('refunded', 10, age=timedelta(days=1))]

    # When 10 are clawed back naming the refunded lot
    change = rules.plan_debit(
        account(20),
        lots,
        amount=10,
        business_id='refund:1',
        kind=EntryKind.CLAW_BACK,
        now=NOW,
        op_params=P,
        source_lot_id='refunded',
    )

    # Then they come out of that lot
    assert [(w.after.lot_id, w.after.remaining) for w in change.lots] == [('refunded', 0)]


def test_expiry_books_out_only_unused_unheld_credit_once() -> None:
    # Given a promo with 4 remaining and 2 held that expired an hour ago
    promo = lot('promo', 4, kind=LotKind.PROMO, expires_in=timedelta(hours=-1), held=2)

    # When the expiry is planned
    change = rules.plan_expire(account(4, held=2), promo, NOW)

    # Then 4 are booked out and the held 2 stay with their hold
    assert change is not None and change.entry is not None
    assert (change.entry.entry.id, change.entry.entry.amount) == (f'expire:{promo.lot_id}', -4)
    booked = change.lots[0].after
    assert (booked.remaining, booked.held, booked.expired, booked.expiry_booked_at) == (0, 2, 4, NOW)
    # And planning it again does nothing
    assert rules.plan_expire(account(0, held=2), booked, NOW) is None


def test_a_lot_not_yet_due_is_not_expired() -> None:
    assert (
        rules.plan_expire(account(4), lot('promo', 4, kind=LotKind.PROMO, expires_in=timedelta(seconds=1)), NOW) is None
    )


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize('amount', [0, -1, rules.MAX_AMOUNT + 1, 1.5, True, '5', None])
def test_amounts_must_be_whole_positive_and_sane(amount: object) -> None:
    with pytest.raises(InvalidAmount):
        rules.check_amount(amount)


def test_negative_amounts_only_where_allowed() -> None:
    assert rules.check_amount(-5, allow_negative=True) == -5
    with pytest.raises(InvalidAmount):
        rules.check_amount(-rules.MAX_AMOUNT - 1, allow_negative=True)


@pytest.mark.parametrize('value', ['', 'has space', 'x' * 257, 'tab\t', None, 7])
def test_ids_are_printable_and_bounded(value: object) -> None:
    with pytest.raises(InvalidInput):
        rules.check_id(value, name='business_id')


@pytest.mark.parametrize(
    ('kind', 'expires'),
    [(LotKind.PAID, NOW), (LotKind.ADJUSTMENT, NOW), (LotKind.PROMO, None), (LotKind.SUBSCRIPTION, None)],
)
def test_only_promo_and_subscription_credit_expires(kind: LotKind, expires: datetime | None) -> None:
    with pytest.raises(InvalidInput):
        rules.check_expiry(kind, expires)


def test_lot_ids_follow_from_the_business_id() -> None:
    assert rules.lot_id_for('stripe:checkout:cs_1') == rules.lot_id_for('stripe:checkout:cs_1')
    assert rules.lot_id_for('stripe:checkout:cs_1') != rules.lot_id_for('stripe:checkout:cs_2')


def test_params_are_canonical() -> None:
    assert rules.params('grant', b=1, a=2) == rules.params('grant', a=2, b=1)
