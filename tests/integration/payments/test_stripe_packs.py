"""Stripe credit packs: one Checkout Session grants its pack exactly once, whatever is delivered how often."""

from __future__ import annotations

import threading

import pytest

from tests.integration.payments.conftest import World
from tests.support_payments import checkout_session, stripe_event


def test_the_same_event_delivered_twice_grants_once(world: World):
    # Given a paid checkout for pack_500
    account = world.account()
    event = stripe_event('checkout.session.completed', checkout_session(account, pack_id='pack_500', amount_total=1999))
    # When Stripe delivers it twice
    first, second = world.stripe(event), world.stripe(event)
    # Then both are 200, the second says duplicate, and there is one ledger entry
    assert (first.status, second.status) == (200, 200)
    assert second.body['status'] == 'duplicate'
    assert world.balance(account) == 500
    assert len(world.entries(account)) == 1


@pytest.mark.ddb_local
def test_the_same_event_delivered_concurrently_grants_once(local_world: World):
    # Given a paid checkout delivered by eight concurrent invocations (on DynamoDB Local: real transactions)
    world = local_world
    account = world.account()
    event = stripe_event('checkout.session.completed', checkout_session(account))
    replies: list = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        replies.append(world.stripe(event))

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every delivery is answered 200 and the pack is granted once
    assert sorted(r.status for r in replies) == [200] * 8
    assert world.balance(account) == 100
    assert world.business_ids(account) == [f'stripe:checkout:{event["data"]["object"]["id"]}']
    assert world.reconciled(account)


def test_completed_and_async_succeeded_for_one_session_grant_once(world: World):
    # Given the two events Stripe sends for one session paid by a delayed method
    account = world.account()
    session = checkout_session(account)
    completed = stripe_event('checkout.session.completed', session)
    succeeded = stripe_event('checkout.session.async_payment_succeeded', session)
    # When both arrive (distinct event ids, one business id)
    world.stripe(completed)
    world.stripe(succeeded)
    # Then the session's pack is granted once
    assert world.balance(account) == 100
    assert world.business_ids(account) == [f'stripe:checkout:{session["id"]}']


def test_unpaid_then_async_succeeded_grants_when_paid(world: World):
    # Given a checkout completed with a delayed payment method (unpaid)
    account = world.account()
    unpaid = checkout_session(account, payment_status='unpaid')
    reply = world.stripe(stripe_event('checkout.session.completed', unpaid))
    # Then nothing is granted yet
    assert reply.status == 200 and world.balance(account) == 0
    # When the payment succeeds later
    world.stripe(stripe_event('checkout.session.async_payment_succeeded', {**unpaid, 'payment_status': 'paid'}))
    # Then the pack is granted
    assert world.balance(account) == 100


def test_async_payment_failed_grants_nothing(world: World):
    account = world.account()
    unpaid = checkout_session(account, payment_status='unpaid')
    world.stripe(stripe_event('checkout.session.completed', unpaid))
    reply = world.stripe(stripe_event('checkout.session.async_payment_failed', unpaid))
    assert reply.status == 200 and 'failed' in reply.body['detail']
    assert world.balance(account) == 0 and world.entries(account) == []


def test_credits_come_from_the_catalog_not_from_event_metadata(world: World):
    # Given a session whose metadata also claims a credit amount
    account = world.account()
    session = checkout_session(account, pack_id='pack_100')
    session['metadata']['credits'] = '100000'
    # When it is paid
    world.stripe(stripe_event('checkout.session.completed', session))
    # Then the catalog's 100 credits are granted
    assert world.balance(account) == 100


@pytest.mark.parametrize('what', ['unknown-pack', 'unknown-account', 'no-account'])
def test_unattributable_purchases_are_parked_with_200_and_change_nothing(world: World, what: str):
    # Given a paid checkout that names an unknown pack, or an account that does not exist
    account = world.account()
    if what == 'unknown-pack':
        session = checkout_session(account, pack_id='pack_999')
    elif what == 'unknown-account':
        session = checkout_session('acc_does_not_exist')
    else:
        session = {**checkout_session(account), 'client_reference_id': None, 'metadata': {'pack_id': 'pack_100'}}
    event = stripe_event('checkout.session.completed', session)
    # When it arrives
    reply = world.stripe(event)
    # Then Stripe gets a 200 (retrying would not help), the event is stored parked for ops, no credit moves
    assert reply.status == 200 and reply.body['status'] == 'parked'
    stored = world.stored('stripe', event['id'])
    assert stored.status == 'parked' and stored.outcome
    assert world.balance(account) == 0


def test_a_failure_after_storing_leaves_the_event_retryable_and_the_retry_grants_once(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    # Given the ledger fails once, after the event was stored
    from atelier.ledger import Ledger

    account = world.account()
    event = stripe_event('checkout.session.completed', checkout_session(account))
    real_grant = Ledger.grant
    calls = {'n': 0}

    def flaky_grant(self, *args, **kwargs):
        calls['n'] += 1
        if calls['n'] == 1:
            raise ConnectionError('DynamoDB went away')
        return real_grant(self, *args, **kwargs)

    monkeypatch.setattr(Ledger, 'grant', flaky_grant)
    # When Stripe delivers it
    first = world.stripe(event)
    # Then Stripe is told to retry (5xx), and the event is kept as failed, not done
    assert first.status == 503
    stored = world.stored('stripe', event['id'])
    assert stored.status == 'failed' and 'DynamoDB went away' in (stored.error or '')
    assert world.balance(account) == 0
    # When Stripe retries
    second = world.stripe(event)
    # Then the pack is granted, once
    assert second.status == 200 and second.body['status'] == 'processed'
    assert world.balance(account) == 100
    assert world.stored('stripe', event['id']).attempts == 2


def test_a_crash_after_the_grant_but_before_marking_done_does_not_grant_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    # Given marking the event done fails once (the grant itself went through)
    from atelier.payments.store import PaymentsTable

    account = world.account()
    event = stripe_event('checkout.session.completed', checkout_session(account))
    real_mark = PaymentsTable.mark_event
    calls = {'n': 0}

    def flaky_mark(self, provider, event_id, status, **kwargs):
        calls['n'] += 1
        if calls['n'] == 1 and status == 'processed':
            raise TimeoutError('Lambda timed out')
        return real_mark(self, provider, event_id, status, **kwargs)

    monkeypatch.setattr(PaymentsTable, 'mark_event', flaky_mark)
    # When it is delivered, fails, and is retried
    assert world.stripe(event).status == 503
    assert world.stripe(event).status == 200
    # Then the credits were granted exactly once
    assert world.balance(account) == 100
    assert len(world.entries(account)) == 1


def test_a_crash_between_the_state_write_and_the_ledger_is_finished_by_the_next_delivery(
    world: World, monkeypatch: pytest.MonkeyPatch
):
    # Given the queued grant is not carried out (a crash right after the payment state was written)
    from atelier.payments.book import PaymentBook

    account = world.account()
    event = stripe_event('checkout.session.completed', checkout_session(account))
    real_execute = PaymentBook._execute

    def crash(self, op):
        raise RuntimeError('crashed before the ledger call')

    monkeypatch.setattr(PaymentBook, '_execute', crash)
    assert world.stripe(event).status == 503
    monkeypatch.setattr(PaymentBook, '_execute', real_execute)
    # When Stripe redelivers it
    assert world.stripe(event).status == 200
    # Then the queued grant was carried out once
    assert world.balance(account) == 100


def test_the_same_event_id_from_two_providers_does_not_collide(world: World):
    # Given a Stripe event and a RevenueCat event that happen to share an id
    from tests.support_payments import rc_purchase

    account = world.account()
    stripe = stripe_event('checkout.session.completed', checkout_session(account), event_id='evt_shared')
    revenuecat = rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', 'txn_shared')
    revenuecat['event']['id'] = 'evt_shared'
    # When both arrive
    world.stripe(stripe)
    world.rc(revenuecat)
    # Then neither blocks the other
    assert world.balance(account) == 200
    assert world.stored('stripe', 'evt_shared').status == 'processed'
    assert world.stored('revenuecat', 'evt_shared').status == 'processed'


@pytest.mark.ddb_local
def test_different_events_of_one_payment_delivered_concurrently_settle_once(local_world: World):
    # Given the purchase, its delayed-payment success and two partial refunds, each delivered twice at once
    from tests.support_payments import charge

    world = local_world
    account = world.account()
    session = checkout_session(account, pack_id='pack_500', payment_intent='pi_race', amount_total=2000)
    events = [
        stripe_event('checkout.session.completed', session),
        stripe_event('checkout.session.async_payment_succeeded', session),
        stripe_event('charge.refunded', charge(payment_intent='pi_race', amount=2000, amount_refunded=500)),
        stripe_event('charge.refunded', charge(payment_intent='pi_race', amount=2000, amount_refunded=1200)),
    ]
    barrier = threading.Barrier(len(events) * 2)
    replies: list = []

    def deliver(event: dict) -> None:
        barrier.wait()
        replies.append(world.stripe(event))

    threads = [threading.Thread(target=deliver, args=(e,)) for e in events * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Then every delivery is acknowledged and the account holds 500 - 500 * 1200/2000 credits
    assert sorted(r.status for r in replies) == [200] * 8
    assert world.balance(account) == 200
    assert world.reconciled(account)
