"""The pure payment rules: what a payment keeps, whatever order and repetition its facts arrive in."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from atelier.payments.state import AccountPlanState, GrantFact, PaymentState, Subscription

Fact = Callable[[PaymentState], PaymentState]

GRANT = GrantFact(business_id='stripe:checkout:cs_1', account_id='acc', credits=500, amount=2000, kind='paid')


def grant(state: PaymentState) -> PaymentState:
    return state.with_grant(GRANT)


def refund(cumulative: int) -> Fact:
    return lambda s: s.with_refund(f'stripe:refund:ch_1:{cumulative}', cumulative=cumulative, charge_amount=2000)


def chargeback(status: str) -> Fact:
    return lambda s: s.with_chargeback(
        f'stripe:dispute:dp_1:{status}', chargeback_id='dp_1', amount=2000, status=status
    )  # type: ignore[arg-type]


def run(facts: list[Fact]) -> PaymentState:
    state = PaymentState(key='stripe:pi_1')
    for fact in facts:
        state = fact(state)
    return state


def net(state: PaymentState) -> int:
    """Credits the account keeps from all queued operations."""
    return sum(op.amount if op.op == 'grant' else -op.amount for op in state.pending)


def test_a_grant_queues_one_grant_operation_keyed_by_the_purchase():
    state = run([grant])
    assert [(op.op, op.business_id, op.amount) for op in state.pending] == [('grant', 'stripe:checkout:cs_1', 500)]


def test_refunds_take_back_in_proportion_and_only_growth_counts():
    state = run([grant, refund(500), refund(1200), refund(500), refund(1200)])
    assert [(op.business_id, op.amount) for op in state.pending[1:]] == [
        ('stripe:refund:ch_1:500', 125),
        ('stripe:refund:ch_1:1200', 175),
    ]
    assert net(state) == 200


def test_rounding_is_half_up_and_a_full_refund_takes_everything():
    three = GrantFact(business_id='g', account_id='acc', credits=100, amount=300, kind='paid')
    state = PaymentState(key='k').with_grant(three)
    state = state.with_refund('r:1', cumulative=1, charge_amount=300)  # 0.33 -> 0
    state = state.with_refund('r:2', cumulative=2, charge_amount=300)  # 0.67 -> 1
    state = state.with_refund('r:3', cumulative=299, charge_amount=300)  # 99.67 -> 100? no: 99.67 -> 100
    state = state.with_refund('r:4', cumulative=300, charge_amount=300)
    assert state.clawed == 100 and net(state) == 0


def test_a_won_dispute_gives_back_and_a_lost_one_keeps_it_taken():
    assert net(run([grant, chargeback('open'), chargeback('won')])) == 500
    assert net(run([grant, chargeback('open'), chargeback('lost')])) == 0
    assert net(run([grant, chargeback('lost'), chargeback('won')])) == 0  # lost is final
    assert net(run([grant, chargeback('won'), chargeback('lost')])) == 0  # in any order
    assert net(run([grant, chargeback('won'), chargeback('open')])) == 500


def test_refunds_and_disputes_together_never_take_more_than_was_granted():
    assert net(run([grant, refund(2000), chargeback('open')])) == 0
    assert net(run([grant, chargeback('open'), refund(1000), chargeback('won')])) == 250


def test_facts_before_the_grant_apply_when_it_lands():
    state = run([refund(1000), chargeback('open')])
    assert state.pending == [] and state.grant is None
    state = grant(state)
    assert [op.business_id for op in state.pending] == ['stripe:checkout:cs_1', 'stripe:checkout:cs_1:clawback']
    assert net(state) == 0


def test_a_second_grant_for_the_same_payment_is_kept_aside():
    other = GRANT.model_copy(update={'business_id': 'stripe:checkout:cs_2'})
    state = run([grant, lambda s: s.with_grant(other)])
    assert net(state) == 500 and state.conflicting_grants == ['stripe:checkout:cs_2']


def test_done_operations_leave_the_queue():
    state = run([grant, refund(500)])
    state = state.with_carried_out({'stripe:checkout:cs_1'})
    assert [op.business_id for op in state.pending] == ['stripe:refund:ch_1:500']
    assert state.applied == ['stripe:checkout:cs_1']


SUB = GrantFact(
    business_id='rc:txn:t2', account_id='acc', credits=1000, amount=999, kind='subscription', expires_at=1_000
)


def store_refund(refunded: bool, at: int) -> Fact:
    return lambda s: s.with_store_refund(f'rc:refund:t2:{refunded}:{at}', refunded=refunded, event_at=at)


def test_a_grant_the_ledger_refused_as_expired_takes_nothing_back_and_gives_nothing_back():
    # Given a renewal whose grant was queued, and a refund queued after it
    state = PaymentState(key='rc:t2').with_grant(SUB)
    state = store_refund(True, 5)(state)
    assert [op.op for op in state.pending] == ['grant', 'claw_back']
    # When the ledger refused the grant (its period was over), so the executor stopped there
    state = state.with_carried_out(set(), SUB.business_id)
    # Then the payment granted nothing: nothing is queued, nothing counts as taken, later news books nothing
    assert (state.pending, state.clawed, state.grant_skipped) == ([], 0, True)
    state = store_refund(False, 6)(store_refund(True, 7)(state))
    assert state.pending == [] and state.clawback_target() == 0


def test_a_give_back_the_ledger_refused_leaves_the_credits_taken():
    state = store_refund(True, 5)(PaymentState(key='rc:t2').with_grant(SUB))
    state = state.with_carried_out({op.business_id for op in state.pending})
    state = store_refund(False, 6)(state)
    [give_back] = state.pending
    assert (give_back.op, give_back.amount, give_back.source) == ('grant', 1000, 'rc:txn:t2')
    state = state.with_carried_out(set(), give_back.business_id)
    assert (state.clawed, state.pending) == (1000, [])  # still taken
    state = store_refund(True, 7)(state)
    assert state.pending == []  # a refund after it takes nothing more
    state = store_refund(False, 8)(state)
    assert state.pending == []  # and no give-back is planned again: none can be booked


def test_a_refund_queued_behind_a_give_back_that_is_then_refused_takes_nothing_more():
    # Given a renewal booked and refunded (1000 taken)
    state = store_refund(True, 5)(PaymentState(key='rc:t2').with_grant(SUB))
    state = state.with_carried_out({op.business_id for op in state.pending})
    # And a reversal whose give-back stayed queued (its delivery failed), then a second refund after the period
    state = store_refund(True, 7)(store_refund(False, 6)(state))
    assert [(op.op, op.amount) for op in state.pending] == [('grant', 1000), ('claw_back', 1000)]
    # When the executor finds the give-back refused (the period is over) and stops there
    state = state.with_carried_out(set(), state.pending[0].business_id)
    # Then the claw-back planned on it is gone: the payment took 1000 once, and nothing more is queued
    assert (state.clawed, state.pending, state.give_backs_expired) == (1000, [], True)


def test_the_newest_store_refund_report_decides_in_any_order():
    reports = [store_refund(True, 1), store_refund(False, 2), store_refund(True, 3)]
    for order in ([0, 1, 2], [2, 1, 0], [1, 0, 2], [2, 0, 1, 2, 0]):
        state = PaymentState(key='rc:t2').with_grant(SUB)
        for i in order:
            state = reports[i](state)
        assert state.clawed == 1000, order
    reversed_last = PaymentState(key='rc:t2').with_grant(SUB)
    for report in [store_refund(True, 1), store_refund(False, 2)]:
        reversed_last = report(reversed_last)
    assert reversed_last.clawed == 0


FACTS: list[Fact] = [
    grant,
    refund(300),
    refund(900),
    refund(1500),
    chargeback('open'),
    chargeback('won'),
    chargeback('lost'),
]


@given(st.lists(st.sampled_from(range(len(FACTS))), min_size=1, max_size=20), st.randoms(use_true_random=False))
def test_any_order_and_repetition_of_the_same_facts_keeps_the_same_credits(picks, rnd):
    # Given some facts, each delivered one or more times, in two different orders
    facts = [FACTS[i] for i in picks]
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    a, b = run(facts), run(shuffled)
    # Then the credits kept and taken back are the same, and no business id is booked twice
    assert (net(a), a.clawed) == (net(b), b.clawed)
    for state in (a, b):
        ids = [op.business_id for op in state.pending]
        assert len(ids) == len(set(ids))
        assert 0 <= state.clawed <= (GRANT.credits if state.grant else 0)


# ---------------------------------------------------------------- subscriptions

RANKS = {'free': 0, 'pro': 1, 'max': 2}


def report(status: str, at: int, *, entitled: bool = True, final: bool = False, plan: str = 'pro') -> Subscription:
    return Subscription(provider='stripe', plan=plan, status=status, entitled=entitled, final=final, event_at=at)


def test_the_newest_report_wins_and_a_final_one_is_final():
    state = AccountPlanState(account_id='acc')
    state = state.with_subscription('s', report('active', 20))
    state = state.with_subscription('s', report('unpaid', 10, entitled=False))
    assert state.plan(RANKS) == 'pro'
    state = state.with_subscription('s', report('canceled', 15, entitled=False, final=True))
    state = state.with_subscription('s', report('active', 30))
    assert state.plan(RANKS) == 'free'


def test_reports_of_the_same_instant_keep_the_later_lifecycle_step():
    a = AccountPlanState(account_id='acc').with_subscription('s', report('incomplete', 10, entitled=False))
    a = a.with_subscription('s', report('active', 10))
    b = AccountPlanState(account_id='acc').with_subscription('s', report('active', 10))
    b = b.with_subscription('s', report('incomplete', 10, entitled=False))
    assert a.plan(RANKS) == b.plan(RANKS) == 'pro'


def test_the_best_entitled_subscription_gives_the_plan():
    state = AccountPlanState(account_id='acc')
    state = state.with_subscription('a', report('active', 1, plan='pro'))
    state = state.with_subscription('b', report('active', 1, plan='max'))
    assert state.plan(RANKS) == 'max'
    state = state.without_subscriptions({'b'})
    assert state.plan(RANKS) == 'pro'


def test_a_period_is_granted_once_and_topped_up_on_upgrade():
    state = AccountPlanState(account_id='acc')
    state = state.with_period_grant('in_1', subscription='s', period_end=100, plan_credits=1000)
    state = state.with_period_grant('in_1', subscription='s', period_end=100, plan_credits=1000)
    state = state.with_period_grant('in_2', subscription='s', period_end=100, plan_credits=5000)
    state = state.with_period_grant('in_3', subscription='s', period_end=100, plan_credits=1000)
    state = state.with_period_grant('in_4', subscription='s', period_end=200, plan_credits=1000)
    assert state.decided == {'in_1': 1000, 'in_2': 4000, 'in_3': 0, 'in_4': 1000}


REPORTS = [
    ('s1', report('incomplete', 10, entitled=False)),
    ('s1', report('active', 10)),
    ('s1', report('past_due', 20)),
    ('s1', report('unpaid', 30, entitled=False)),
    ('s1', report('active', 40)),
    ('s1', report('canceled', 35, entitled=False, final=True)),
    ('s2', report('trialing', 5, plan='max')),
    ('s2', report('incomplete_expired', 6, entitled=False, final=True, plan='max')),
    ('s2', report('canceled', 7, entitled=False, final=True, plan='max')),
    ('s2', report('active', 7, plan='pro')),
]


@given(st.lists(st.sampled_from(range(len(REPORTS))), min_size=1, max_size=16), st.randoms(use_true_random=False))
def test_any_order_of_subscription_reports_gives_the_same_plan(picks, rnd):
    reports = [REPORTS[i] for i in picks]
    shuffled = list(reports)
    rnd.shuffle(shuffled)

    def fold(items: list[tuple[str, Subscription]]) -> AccountPlanState:
        state = AccountPlanState(account_id='acc')
        for key, item in items:
            state = state.with_subscription(key, item)
        return state

    assert fold(reports).subscriptions == fold(shuffled).subscriptions
