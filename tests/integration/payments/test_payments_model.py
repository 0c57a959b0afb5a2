"""Payments against their reference model (issue 9): a Hypothesis state machine, on moto and on DynamoDB Local.

Random sequences of customer actions at Stripe and RevenueCat (packs, subscriptions with trials, renewals,
upgrades and downgrades, status changes, cancellations and expirations, partial and full refunds, disputes
opened, won and lost, store refunds and their reversals), each event delivered once, twice, late, out of
order, never (then only the backfill brings it), or with the ledger failing under it (the webhook answers
503 and the provider retries later), replayed by ops, backfilled from the providers' APIs, interleaved with
spending (holds, captures, releases), time passing and the expiry job. The real handlers (webhooks, replay,
backfill, expiry) run on the template's tables; ``payments_model.py`` gets the same events as facts. Every
delivery, replay and backfill must answer as the model allows; after every step the account's available, held,
owed and plan, and at the end of each sequence also the ledger's entries (kind and amount per payment or
task) and lots (remaining and held per payment) must be the model's.

Time: the payment book, the ledger and the expiry job share one clock (:class:`Clock`), moved by the test;
the providers' signatures use the real time. Faults: :class:`LedgerFaults` makes the ledger's grant and
claw-back calls fail during one delivery, after the payment's facts were recorded.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal, cast

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from atelier.ledger import InsufficientCredits
from infra.local.fake_revenuecat import LOCAL_API_KEY, FakeRevenueCatServer
from infra.local.fake_stripe import FakeStripeServer
from infra.local.runtime import LambdaContext
from infra.local.template import table_definitions
from tests.hypothesis_profiles import model_settings
from tests.integration.payments.conftest import World, clear_caches
from tests.integration.payments.payments_model import (
    PLANS,
    Disputed,
    DisputeStatus,
    Fact,
    Fault,
    Looked,
    Outcomes,
    PackPaid,
    PaymentsModel,
    PeriodPaid,
    Refunded,
    StoreRefund,
    SubscriptionReport,
)
from tests.support_payments import (
    DAY,
    PACK_100_PRICE,
    PACK_500_PRICE,
    PRO_PRICE,
    charge,
    checkout_session,
    dispute,
    invoice,
    rc_event,
    rc_purchase,
    stripe_event,
    subscription_object,
)

MAX_PRICE = 'price_atelier_max_monthly'
STRIPE_PLANS = {'pro': (PRO_PRICE, 999), 'max': (MAX_PRICE, 2999)}  # plan -> (test price id, cents)
STRIPE_PACKS = {'pack_100': (PACK_100_PRICE, 100, 499), 'pack_500': (PACK_500_PRICE, 500, 1999)}
RC_PACK, RC_PACK_CREDITS, RC_PACK_PRICE = 'credits_100', 100, 4.99
RC_PLAN, RC_PLAN_PRICE = 'pro_monthly', 9.99
PERIOD = 10 * DAY
START = int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())
Apis = tuple[FakeStripeServer, FakeRevenueCatServer]  # the fake Stripe and RevenueCat APIs (the backfill's sources)
ENTITLING_STRIPE_STATUSES = ('active', 'trialing', 'past_due')

Delivery = Literal['now', 'twice', 'unreachable', 'lost_answer', 'later', 'lost']
#: How the provider's first attempt goes: delivered, twice, with the ledger failing under it (503: the provider
#: retries when time passes), queued (delivered late, in any order), or lost (only a backfill brings it).
DELIVERIES: list[Delivery] = [
    'now',
    'now',
    'twice',
    'unreachable',
    'unreachable',
    'unreachable',
    'lost_answer',
    'later',
    'lost',
]
deliveries = st.lists(st.sampled_from(DELIVERIES), min_size=3, max_size=3)
fault_strategy: st.SearchStrategy[Fault] = st.sampled_from([None, None, 'unreachable', 'lost_answer'])
recent = st.integers(0, 50)  # picks among things, the most recent first (Hypothesis favours small numbers)
days_later = st.sampled_from([0, 0, 1, 11])  # when the customer acts: at once, a day or more than a period later


# ---------------------------------------------------------------- time and faults


class Clock:
    """The one clock of the payment book, the ledger and the expiry job: ``now`` whole seconds, moved by the test.

    Each reading adds a microsecond, so lots created in one second still have an order (their creation
    time), which the model knows; readings stay within the second, so every expiry compares as with ``now``.
    """

    def __init__(self, now: int) -> None:
        self.now, self._ticks = now, 0

    def set(self, now: int) -> None:
        assert now >= self.now, 'time only moves forward'
        if now > self.now:
            self.now, self._ticks = now, 0

    def __call__(self) -> datetime:
        self._ticks += 1
        assert self._ticks < 1_000_000
        return datetime.fromtimestamp(self.now, UTC) + timedelta(microseconds=self._ticks)


class LedgerFaults:
    """While armed, the ledger's grant and claw-back calls fail: ``unreachable`` before booking, ``lost_answer``
    after the first call that succeeds (it is booked, its answer lost); any later call fails before booking.
    A call the ledger refuses (a grant whose credit has expired) is answered as it is."""

    def __init__(self) -> None:
        self.mode: Fault = None

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from atelier.ledger import Ledger

        for name in ('grant', 'claw_back'):
            monkeypatch.setattr(Ledger, name, self._wrap(getattr(Ledger, name)))

    def _wrap(self, call: Callable[..., Any]) -> Callable[..., Any]:
        def faulty(ledger: Any, *args: Any, **kwargs: Any) -> Any:
            if self.mode is None:
                return call(ledger, *args, **kwargs)
            if self.mode == 'unreachable':
                raise ConnectionError('injected: the ledger is unreachable')
            call(ledger, *args, **kwargs)
            self.mode = 'unreachable'
            raise TimeoutError('injected: the ledger booked it, the answer was lost')

        return faulty


# ---------------------------------------------------------------- what the providers know


@dataclass
class Sent:
    """One provider event: its body for the real handlers, its facts for the model."""

    provider: Literal['stripe', 'revenuecat']
    event_id: str
    body: dict[str, Any]
    facts: tuple[Fact, ...]
    stripe_log: dict[str, Any] | None = None  # the fake Stripe Events API's entry ('delivered')


@dataclass
class StripePayment:
    tag: str
    intent: str
    money: int
    refunded: int = 0
    dispute: str | None = None  # None, 'open', 'won', 'lost'
    disputed: int = 0


@dataclass
class StripeSubscription:
    id: str
    plan: str
    status: str
    period_end: int


@dataclass
class StoreTransaction:
    tag: str
    txn: str
    product: str
    purchased: int
    expires: int | None = None
    trial: bool = False
    refund: tuple[int, bool] | None = None  # the store's latest refund report: (at, refunded)


@dataclass
class StoreSubscription:
    original: str
    transactions: list[StoreTransaction] = field(default_factory=list)
    cancelled: bool = False
    expired: bool = False

    @property
    def key(self) -> str:
        return f'rc:{self.original}'

    @property
    def latest(self) -> StoreTransaction:
        return self.transactions[-1]


# ---------------------------------------------------------------- the machine


class PaymentsMachine(RuleBasedStateMachine):
    """One fresh account per example; the world (tables, handlers, fakes) is shared by the examples of a test."""

    world: ClassVar[World]
    clock: ClassVar[Clock]
    ledger_faults: ClassVar[LedgerFaults]
    stripe_api: ClassVar[FakeStripeServer]
    revenuecat_api: ClassVar[FakeRevenueCatServer]
    monkeypatch: ClassVar[pytest.MonkeyPatch]
    tables_per_sequence: ClassVar[bool]

    def __init__(self) -> None:
        super().__init__()
        self.model = PaymentsModel()
        self.sent: list[Sent] = []
        self.queue: list[Sent] = []  # late or failed deliveries the provider will (re)try
        self.stripe_payments: list[StripePayment] = []
        self.stripe_subscription: StripeSubscription | None = None
        self.store_transactions: list[StoreTransaction] = []
        self.store_subscription: StoreSubscription | None = None
        self.tasks: list[tuple[str, str, int]] = []  # open holds: (task id, tag, amount)
        self.counter = 0

    @initialize()
    def open_account(self) -> None:
        self.ex = uuid.uuid4().hex[:10]
        self.now = self.clock.now + DAY  # examples follow each other in time
        self.clock.set(self.now)
        if self.tables_per_sequence:
            self.use_new_tables()
        self.account = self.world.account()
        self.stripe_api.events.clear()

    def use_new_tables(self) -> None:
        """moto copies a whole table for every transaction, so on moto each sequence gets small new tables."""
        import atelier.config
        import atelier.payments.service
        import atelier.wiring

        for variable, logical_id in (('LEDGER_TABLE', 'LedgerTable'), ('EVENTS_TABLE', 'EventsTable')):
            previous = os.environ[variable]
            name = f'{logical_id}-{self.ex}'
            self.world.ddb.create_table(**{**table_definitions()[logical_id], 'TableName': name})  # active at once
            self.monkeypatch.setenv(variable, name)
            if previous.startswith(f'{logical_id}-'):  # the previous sequence's
                self.world.ddb.delete_table(TableName=previous)
        atelier.config.get_settings.cache_clear()
        atelier.wiring.ledger.cache_clear()
        atelier.payments.service.payments_service.cache_clear()

    # ------------------------------------------------------------ ids and time
    def tag(self, kind: str = 'P') -> str:
        """A payment (P), subscription (S) or task (T) tag; ids carry it as ``{ex}{tag}Q``, entries are traced by it."""
        self.counter += 1
        return f'{kind}{self.counter}'

    def ref(self, prefix: str, tag: str) -> str:
        return f'{prefix}{self.ex}{tag}Q'

    def tick(self) -> int:
        """The time of a new provider event: one second after the last one."""
        self.now += 1
        self.clock.set(self.now)
        return self.now

    def wait(self, days: int) -> None:
        """The customer's next action comes ``days`` later (nothing is retried meanwhile: see ``time_passes``)."""
        self.now += days * DAY
        self.clock.set(self.now)

    # ------------------------------------------------------------ sending events
    def stripe(self, event_type: str, obj: dict[str, Any], *facts: Fact) -> Sent:
        """A Stripe event created now (``tick`` first), also in the Events API's log as not delivered yet."""
        event = stripe_event(event_type, obj, created=self.now, event_id=self.ref('evt_', f'E{self.now}'))
        self.stripe_api.add_event(event, delivered=False)
        return Sent('stripe', event['id'], event, facts, stripe_log=self.stripe_api.events[-1])

    def store(self, body: dict[str, Any], *facts: Fact) -> Sent:
        return Sent('revenuecat', body['event']['id'], body, facts)

    def store_event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """A RevenueCat webhook body sent now (``tick`` first)."""
        return rc_event(
            event_type, self.account, id=self.ref('RC', f'E{self.now}'), event_timestamp_ms=self.now * 1000, **fields
        )

    def send(self, events: list[Sent], how: list[Delivery]) -> None:
        """The provider's first attempt at each event, as ``how`` says (``now`` for any beyond)."""
        for sent, delivery in zip(events, [*how, *['now'] * len(events)], strict=False):
            self.sent.append(sent)
            if delivery in ('now', 'twice'):
                self.deliver_one(sent)
            if delivery == 'twice':
                self.deliver_one(sent)
            if delivery in ('unreachable', 'lost_answer'):
                self.deliver_one(sent, fault=cast(Fault, delivery))
            if delivery == 'later':
                self.queue.append(sent)

    def deliver_one(self, sent: Sent, fault: Fault = None) -> None:
        """A webhook delivery: the handler answers as the model allows; a failed one is retried later."""
        outcomes = self.model.deliver(sent.event_id, sent.facts, self.now, fault)
        self.ledger_faults.mode = fault
        try:
            reply = self.world.stripe(sent.body) if sent.provider == 'stripe' else self.world.rc(sent.body)
        finally:
            self.ledger_faults.mode = None
        assert reply.status in (200, 503), (sent.event_id, reply)
        status = 'failed' if reply.status == 503 else reply.body['status']
        self.follow(outcomes, status, f'{sent.event_id} ({sent.body.get("type") or sent.body["event"]["type"]})')
        if status == 'failed':
            if sent not in self.queue:
                self.queue.append(sent)
            return
        if sent in self.queue:
            self.queue.remove(sent)
        if sent.stripe_log is not None:
            sent.stripe_log['delivered'] = True  # a 2xx: the Events API no longer lists it as undelivered

    # ------------------------------------------------------------ buying packs
    @rule(
        product=st.sampled_from(['stripe:pack_100', 'stripe:pack_500', 'revenuecat:credits_100']),
        flow=st.sampled_from(['paid', 'paid', 'async_succeeded', 'async_failed']),
        how=deliveries,
        days=days_later,
    )
    def buy_pack(self, product: str, flow: str, how: list[Delivery], days: int) -> None:
        """A pack: Stripe Checkout paid at once, or a delayed payment that succeeds or fails; or an in-app purchase."""
        self.wait(days)
        tag = self.tag()
        if product == f'revenuecat:{RC_PACK}':
            txn = self.store_transaction(tag, RC_PACK)
            body = rc_purchase(
                'NON_RENEWING_PURCHASE',
                self.account,
                RC_PACK,
                txn.txn,
                id=self.ref('RC', f'E{self.now}'),
                event_timestamp_ms=self.now * 1000,
                purchased_at_ms=self.now * 1000,
                price=RC_PACK_PRICE,
            )
            self.send([self.store(body, PackPaid(tag, RC_PACK_CREDITS, cents(RC_PACK_PRICE)))], how)
            return
        pack = product.removeprefix('stripe:')
        _, credits, money = STRIPE_PACKS[pack]
        intent = self.ref('pi_', tag)
        session = checkout_session(
            self.account,
            pack_id=pack,
            session_id=self.ref('cs_test_', tag),
            payment_intent=intent,
            amount_total=money,
            payment_status='paid' if flow == 'paid' else 'unpaid',
        )
        paid = PackPaid(tag, credits, money)
        self.tick()
        if flow == 'paid':
            events = [self.stripe('checkout.session.completed', session, paid)]
        else:
            events = [self.stripe('checkout.session.completed', session)]
            self.tick()
            if flow == 'async_succeeded':
                settled = {**session, 'payment_status': 'paid'}
                events.append(self.stripe('checkout.session.async_payment_succeeded', settled, paid))
            else:
                events.append(self.stripe('checkout.session.async_payment_failed', session, Looked(tag)))
        if flow != 'async_failed':
            self.stripe_payments.append(StripePayment(tag, intent, money))
        self.send(events, how)

    def store_transaction(
        self, tag: str, product: str, *, period: bool = False, trial: bool = False
    ) -> StoreTransaction:
        """A store transaction made now (``tick``); a subscription's runs one period from the later of now and
        the previous transaction's expiry."""
        self.tick()
        expires = None
        if period:
            previous = self.store_subscription.latest.expires if self.store_subscription else None
            expires = max(previous or 0, self.now) + PERIOD
        txn = StoreTransaction(tag, self.ref('txn_', tag), product, self.now, expires, trial)
        self.store_transactions.append(txn)
        return txn

    # ------------------------------------------------------------ subscriptions
    @rule(
        provider=st.sampled_from(['stripe', 'revenuecat']),
        plan=st.sampled_from(['pro', 'max']),
        trial=st.booleans(),
        how=deliveries,
        days=days_later,
    )
    def pay_subscription_period(self, provider: str, plan: str, trial: bool, how: list[Delivery], days: int) -> None:
        """A subscription's next period. The first starts it (a free trial or paid): Stripe Checkout and the first
        invoice, or the store's first transaction; later ones renew it: a Stripe cycle invoice (a trial converts),
        a store renewal. One store subscription per account here; once it has ended, Stripe's."""
        self.wait(days)
        if provider == 'revenuecat' and self.store_subscription is None:
            txn = self.store_transaction(self.tag(), RC_PLAN, period=True, trial=trial)
            self.store_subscription = StoreSubscription(txn.txn, [txn])
            events = [self.store_purchase('INITIAL_PURCHASE', txn)]
        elif provider == 'revenuecat' and self.renewable_in_the_app():
            store = self.store_subscription
            assert store is not None
            txn = self.store_transaction(self.tag(), RC_PLAN, period=True)
            store.transactions.append(txn)
            events = [self.store_purchase('RENEWAL', txn)]
        elif self.stripe_subscription is None:
            events = self.start_stripe_subscription(plan, trial)
        else:
            sub = self.stripe_subscription
            start = max(sub.period_end, self.now)
            sub.period_end = start + PERIOD
            events = [self.stripe_invoice(sub, 'subscription_cycle', start, STRIPE_PLANS[sub.plan][1])]
        self.send(events, how)

    def start_stripe_subscription(self, plan: str, trial: bool) -> list[Sent]:
        """Checkout in subscription mode and the first invoice paid ($0 for a trial)."""
        tag = self.tag('S')
        sub = StripeSubscription(self.ref('sub_', tag), plan, 'trialing' if trial else 'active', self.now + PERIOD)
        self.stripe_subscription = sub
        session = checkout_session(
            self.account,
            plan_id=plan,
            subscription=sub.id,
            customer=self.customer,
            session_id=self.ref('cs_test_', tag),
            payment_status='no_payment_required' if trial else 'paid',
        )
        self.tick()
        checkout = self.stripe('checkout.session.completed', session, self.stripe_report(sub))
        return [
            checkout,
            self.stripe_invoice(sub, 'subscription_create', self.now, 0 if trial else STRIPE_PLANS[plan][1]),
        ]

    @property
    def customer(self) -> str:
        return self.ref('cus_', 'C')

    def subscription_object(self, sub: StripeSubscription) -> dict[str, Any]:
        return subscription_object(
            self.account,
            subscription_id=sub.id,
            status=sub.status,
            price=STRIPE_PLANS[sub.plan][0],
            period_end=sub.period_end,
            customer=self.customer,
        )

    def stripe_report(self, sub: StripeSubscription, *, final: bool = False) -> SubscriptionReport:
        """What a Stripe event created now says of ``sub``: its plan, entitled or not."""
        entitled = not final and sub.status in ENTITLING_STRIPE_STATUSES
        return SubscriptionReport(sub.id, self.now * 1000, sub.plan, entitled, final)

    def stripe_invoice(
        self, sub: StripeSubscription, reason: str, start: int, money: int, *, lines: list[dict[str, Any]] | None = None
    ) -> Sent:
        """``invoice.paid`` for ``sub``'s plan and period: it reports the subscription active, and a paid one
        (``money`` cents, on a PaymentIntent) is a payment of the period."""
        tag = self.tag()
        intent = self.ref('pi_', tag) if money else None
        body = invoice(
            self.account,
            subscription=sub.id,
            invoice_id=self.ref('in_', tag),
            billing_reason=reason,
            amount_paid=money,
            price=STRIPE_PLANS[sub.plan][0],
            period_start=start,
            period_end=sub.period_end,
            payment_intent=intent,
            customer=self.customer,
            lines=lines,
        )
        sub.status = 'active'
        self.tick()
        facts: list[Fact] = [self.stripe_report(sub)]
        if intent is not None:
            facts.append(PeriodPaid(tag, sub.id, sub.plan, sub.period_end, money))
            self.stripe_payments.append(StripePayment(tag, intent, money))
        return self.stripe('invoice.paid', body, *facts)

    def store_purchase(self, event_type: str, txn: StoreTransaction) -> Sent:
        assert self.store_subscription is not None and txn.expires is not None
        body = rc_purchase(
            event_type,
            self.account,
            RC_PLAN,
            txn.txn,
            id=self.ref('RC', f'E{txn.purchased}'),
            original_transaction_id=self.store_subscription.original,
            event_timestamp_ms=txn.purchased * 1000,
            purchased_at_ms=txn.purchased * 1000,
            expiration_at_ms=txn.expires * 1000,
            period_type='TRIAL' if txn.trial else 'NORMAL',
            price=0 if txn.trial else RC_PLAN_PRICE,
        )
        return self.store(body, *self.store_purchase_facts(txn))

    def store_purchase_facts(self, txn: StoreTransaction) -> list[Fact]:
        """A store subscription purchase: the plan on; a paid (not trial) period."""
        assert self.store_subscription is not None and txn.expires is not None
        key = self.store_subscription.key
        facts: list[Fact] = [SubscriptionReport(key, txn.purchased * 1000, 'pro', entitled=True)]
        if not txn.trial:
            facts.append(PeriodPaid(txn.tag, key, 'pro', txn.expires, cents(RC_PLAN_PRICE)))
        return facts

    def renewable_in_the_app(self) -> bool:
        sub = self.store_subscription
        return sub is not None and not sub.cancelled and not sub.expired

    def live_in_the_app(self) -> bool:
        sub = self.store_subscription
        return sub is not None and not sub.expired

    @precondition(lambda self: self.stripe_subscription is not None or self.live_in_the_app())
    @rule(
        provider=st.sampled_from(['stripe', 'revenuecat']),
        change=st.sampled_from(['trouble', 'suspend', 'resume', 'switch_plan', 'cancel', 'end']),
        how=deliveries,
        days=days_later,
    )
    def change_subscription(self, provider: str, change: str, how: list[Delivery], days: int) -> None:
        """Stripe: past_due (trouble), unpaid (suspend), active (resume), an upgrade or downgrade (switch_plan),
        canceled (cancel: final) or deleted (end: final). The store: a billing issue (trouble, suspend), an
        uncancellation (resume), a product change (switch_plan), an unsubscription (cancel: auto-renew off, the
        plan stays until the expiration) or the expiration (end)."""
        self.wait(days)
        stripe = provider == 'stripe' and self.stripe_subscription is not None
        if stripe or not self.live_in_the_app():
            self.send(self.change_stripe_subscription(change), how)
            return
        store = self.store_subscription
        assert store is not None and store.latest.expires is not None
        self.tick()
        fields = {
            'transaction_id': store.latest.txn,
            'original_transaction_id': store.original,
            'product_id': RC_PLAN,
            'expiration_at_ms': store.latest.expires * 1000,
        }
        facts: tuple[Fact, ...] = ()
        if change == 'end':
            store.expired = True
            body = self.store_event('EXPIRATION', expiration_reason='UNSUBSCRIBE', **fields)
            facts = (SubscriptionReport(store.key, self.now * 1000, 'pro', entitled=False),)
        elif change == 'cancel' and self.now < store.latest.expires:  # one cancels a running period only
            store.cancelled = True
            body = self.store_event('CANCELLATION', cancel_reason='UNSUBSCRIBE', **fields)
        elif change == 'resume':
            store.cancelled = False
            body = self.store_event('UNCANCELLATION', **fields)
        elif change == 'switch_plan':
            body = self.store_event('PRODUCT_CHANGE', new_product_id=RC_PLAN, **fields)
        else:
            body = self.store_event('BILLING_ISSUE', **fields)
        self.send([self.store(body, *facts)], how)

    def change_stripe_subscription(self, change: str) -> list[Sent]:
        sub = self.stripe_subscription
        assert sub is not None
        if change == 'switch_plan':
            return self.switch_stripe_plan(sub)
        self.tick()
        sub.status = {'trouble': 'past_due', 'suspend': 'unpaid', 'resume': 'active'}.get(change, 'canceled')
        if change in ('cancel', 'end'):
            self.stripe_subscription = None
            kind = 'deleted' if change == 'end' else 'updated'
            report = self.stripe_report(sub, final=True)
            return [self.stripe(f'customer.subscription.{kind}', self.subscription_object(sub), report)]
        return [self.stripe('customer.subscription.updated', self.subscription_object(sub), self.stripe_report(sub))]

    def switch_stripe_plan(self, sub: StripeSubscription) -> list[Sent]:
        """Upgrade pro -> max (a proration invoice in the same period) or downgrade max -> pro (a $0 invoice)."""
        old, new = sub.plan, 'max' if sub.plan == 'pro' else 'pro'
        money = STRIPE_PLANS[new][1] - STRIPE_PLANS[old][1] if new == 'max' else 0
        start = min(self.now, sub.period_end)
        unused = STRIPE_PLANS[old][1] // 3

        def line(plan: str, amount: int) -> dict[str, Any]:
            return {
                'id': self.ref('il_', f'{plan}{self.counter}'),
                'amount': amount,
                'period': {'start': start, 'end': sub.period_end},
                'pricing': {'price_details': {'price': STRIPE_PLANS[plan][0]}},
            }

        lines = [line(old, -unused), line(new, money + unused)] if money else [line(new, 0)]
        sub.plan = new
        proration = self.stripe_invoice(sub, 'subscription_update', start, money, lines=lines)
        self.tick()
        updated = self.stripe('customer.subscription.updated', self.subscription_object(sub), self.stripe_report(sub))
        return [proration, updated]

    # ------------------------------------------------------------ refunds and disputes
    @precondition(lambda self: self.stripe_payments or self.store_transactions)
    @rule(
        which=recent,
        kind=st.sampled_from(['refund', 'dispute']),
        share=st.integers(1, 100),
        reports=st.integers(1, 3),
        how=deliveries,
        days=days_later,
    )
    def take_money_back(self, which: int, kind: str, share: int, reports: int, how: list[Delivery], days: int) -> None:
        """``reports`` news about one payment, one event each. Stripe: refunds (the charge's refunds grow by
        ``share`` % of it, at least a cent) or the dispute's next steps (opened for ``share`` % of the charge,
        then won or lost; a won one may still be lost). The store: a refund (CANCELLATION, CUSTOMER_SUPPORT),
        the reversal of the refund, a refund again..."""
        self.wait(days)
        payments: list[StripePayment | StoreTransaction] = [*self.stripe_payments, *self.store_transactions]
        payment = payments[len(payments) - 1 - which % len(payments)]
        events = []
        for _ in range(reports):
            self.tick()
            if isinstance(payment, StoreTransaction):
                events.append(self.store_refund(payment))
            elif kind == 'dispute' or payment.refunded == payment.money:
                events.append(self.stripe_dispute_step(payment, share))
            else:
                payment.refunded = min(payment.money, payment.refunded + max(1, payment.money * share // 100))
                refunded = charge(
                    payment_intent=payment.intent,
                    amount=payment.money,
                    amount_refunded=payment.refunded,
                    charge_id=self.ref('ch_', payment.tag),
                )
                fact = Refunded(payment.tag, payment.refunded, payment.money)
                events.append(self.stripe('charge.refunded', refunded, fact))
        self.send(events, how)

    def stripe_dispute_step(self, payment: StripePayment, share: int) -> Sent:
        status: DisputeStatus
        if payment.dispute is None:
            payment.disputed = max(1, payment.money * share // 100)
            status, event_type, stripe_status = 'open', 'charge.dispute.created', 'needs_response'
        elif payment.dispute == 'open' and share % 3 == 1:
            status, event_type, stripe_status = 'won', 'charge.dispute.funds_reinstated', 'won'
        elif payment.dispute == 'open' and share % 3 == 2:
            status, event_type, stripe_status = 'won', 'charge.dispute.closed', 'won'
        else:
            status, event_type, stripe_status = 'lost', 'charge.dispute.closed', 'lost'
        payment.dispute = status
        dispute_id = self.ref('dp_', payment.tag)
        body = dispute(
            payment_intent=payment.intent,
            amount=payment.disputed,
            status=stripe_status,
            dispute_id=dispute_id,
            charge_id=self.ref('ch_', payment.tag),
        )
        return self.stripe(event_type, body, Disputed(payment.tag, dispute_id, payment.disputed, status))

    def store_refund(self, txn: StoreTransaction) -> Sent:
        """The store refunds the transaction, or reverses its refund (RevenueCat's REFUND_REVERSED)."""
        refunded = txn.refund is None or not txn.refund[1]
        store = self.store_subscription
        fields = {
            'transaction_id': txn.txn,
            'original_transaction_id': store.original if store and txn in store.transactions else txn.txn,
            'product_id': txn.product,
        }
        if refunded:
            price = RC_PLAN_PRICE if txn.product == RC_PLAN else RC_PACK_PRICE
            body = self.store_event('CANCELLATION', cancel_reason='CUSTOMER_SUPPORT', price=-price, **fields)
        else:
            body = self.store_event('REFUND_REVERSED', **fields)
        txn.refund = (self.now, refunded)
        return self.store(body, StoreRefund(txn.tag, self.now * 1000, refunded))

    # ------------------------------------------------------------ deliveries, replays, backfills
    @precondition(lambda self: self.sent)
    @rule(which=recent, fault=fault_strategy, by_ops=st.booleans())
    def redeliver(self, which: int, fault: Fault, by_ops: bool) -> None:
        """The provider delivers a queued event late (out of order) or sends one again; or (``by_ops``) ops replay
        a stored event (ReplayPaymentEventFunction), whatever its status. A delivery that failed waits for the
        provider's retry (``time_passes``), an ops replay, a backfill or another event of its payment."""
        if not by_ops or not self.stored():
            candidates = [
                s for s in [*self.queue, *reversed(self.sent)] if self.model.inbox.get(s.event_id) != 'failed'
            ]
            if candidates:
                self.deliver_one(candidates[which % len(candidates)], fault)
            return
        stored = self.stored()
        sent = stored[which % len(stored)]
        outcomes = self.model.replay(sent.event_id, sent.facts, self.now, fault)
        self.ledger_faults.mode = fault
        try:
            [result] = self.world.replay({'provider': sent.provider, 'event_id': sent.event_id})['replayed']
        finally:
            self.ledger_faults.mode = None
        self.follow(outcomes, result['status'], f'replay of {sent.event_id}')

    def follow(self, outcomes: Outcomes, status: str, what: str) -> None:
        """The real outcome must be one the model allows; the model goes on from it."""
        assert status in outcomes, f'{what}: {status}, the model says {" or ".join(outcomes)}'
        self.model = outcomes[status]

    def stored(self) -> list[Sent]:
        return [s for s in reversed(self.sent) if s.event_id in self.model.inbox]

    @rule(provider=st.sampled_from(['stripe', 'revenuecat']))
    def backfill(self, provider: str) -> None:
        """BackfillPaymentsFunction: Stripe's undelivered events, or RevenueCat's subscriber, through the inbox."""
        if provider == 'stripe':
            undelivered = [s for s in self.sent if s.stripe_log is not None and not s.stripe_log['delivered']]
            events = [(s.event_id, s.facts) for s in undelivered]  # sent oldest first, as the backfill applies them
            result = self.world.backfill({'stripe': {}})['stripe']
        else:
            subscriber, events = self.store_subscriber()
            self.revenuecat_api.set_subscriber(self.account, subscriber)
            result = self.world.backfill({'revenuecat': {'app_user_ids': [self.account]}})['revenuecat']
        expected = []
        for event_id, facts in events:
            [(status, self.model)] = self.model.deliver(event_id, facts, self.now).items()
            expected.append(status)
        counts = Counter(expected)
        assert (result['processed'], result['duplicate'], result['failed']) == (
            counts['processed'],
            counts['duplicate'],
            0,
        ), result

    def store_subscriber(self) -> tuple[dict[str, Any], list[tuple[str, tuple[Fact, ...]]]]:
        """RevenueCat's subscriber object as the store knows it now, and the events (id, facts) it implies:
        each pack purchase and the subscription's latest transaction, their refunds, the expiration once due."""
        packs, derived = [], []
        for txn in self.store_transactions:
            if txn.product == RC_PACK:
                packs.append({'id': f'rc{txn.txn}', **self.subscriber_entry(txn, RC_PACK_PRICE)})
                paid = PackPaid(txn.tag, RC_PACK_CREDITS, cents(RC_PACK_PRICE))
                derived += [(f'rcsync:purchase:{txn.txn}', (paid,)), *self.derived_refund(txn)]
        subscriber: dict[str, Any] = {'original_app_user_id': self.account, 'non_subscriptions': {RC_PACK: packs}}
        store = self.store_subscription
        if store is not None:
            latest = store.latest
            assert latest.expires is not None
            subscriber['subscriptions'] = {
                RC_PLAN: {
                    **self.subscriber_entry(latest, 0 if latest.trial else RC_PLAN_PRICE),
                    'original_purchase_date': iso(store.transactions[0].purchased),
                    'expires_date': iso(latest.expires),
                    'period_type': 'trial' if latest.trial else 'normal',
                    'grace_period_expires_date': None,
                }
            }
            derived += [(f'rcsync:purchase:{latest.txn}', tuple(self.store_purchase_facts(latest)))]
            derived += self.derived_refund(latest)
            if latest.expires <= self.now:
                report = SubscriptionReport(store.key, latest.expires * 1000, 'pro', entitled=False)
                derived.append((f'rcsync:expiration:{latest.txn}', (report,)))
        return subscriber, derived

    @staticmethod
    def subscriber_entry(txn: StoreTransaction, price: float) -> dict[str, Any]:
        refunded = txn.refund is not None and txn.refund[1]
        return {
            'store_transaction_id': txn.txn,
            'purchase_date': iso(txn.purchased),
            'is_sandbox': True,
            'store': 'app_store',
            'price': {'amount': price, 'currency': 'USD'},
            'refunded_at': iso(txn.refund[0]) if txn.refund is not None and refunded else None,
        }

    @staticmethod
    def derived_refund(txn: StoreTransaction) -> list[tuple[str, tuple[Fact, ...]]]:
        if txn.refund is None or not txn.refund[1]:
            return []
        at_ms = txn.refund[0] * 1000  # each refund the subscriber shows is an event of its own
        return [(f'rcsync:refund:{txn.txn}:{at_ms}', (StoreRefund(txn.tag, at_ms, refunded=True),))]

    # ------------------------------------------------------------ time
    @rule(
        days=st.sampled_from([0, 1, 4, 11, 25]),
        hours=st.integers(0, 23),
        retry=st.booleans(),
        expiry_job=st.booleans(),
    )
    def time_passes(self, days: int, hours: int, retry: bool, expiry_job: bool) -> None:
        """Time passes (periods last 10 days); then with ``retry`` the providers retry every pending delivery,
        oldest first, and with ``expiry_job`` ExpireCreditsFunction books out the unused credit of expired lots."""
        from functions.expire_credits.app import lambda_handler

        self.now += days * DAY + hours * 3600
        self.clock.set(self.now)
        if retry:
            for sent in list(self.queue):
                self.deliver_one(sent)
        if expiry_job:
            lambda_handler({}, LambdaContext(function_name='expire_credits'))
            self.model.expire(self.now)

    # ------------------------------------------------------------ spending
    @rule(start=st.booleans(), amount=st.integers(1, 1200), which=recent, spent=st.integers(0, 100))
    def task(self, start: bool, amount: int, which: int, spent: int) -> None:
        """A task starts and holds ``amount`` credits (or is refused), or (not ``start``) one ends: it captures
        ``spent`` % of its hold, or releases it (0: it failed). The ledger API, as the tasks service calls it."""
        from atelier.wiring import ledger

        if start or not self.tasks:
            tag = self.tag('T')
            task = self.ref('task_', tag)
            if self.model.ledger.hold(tag, amount, self.now):
                ledger().hold(self.account, task_id=task, amount=amount)
                self.tasks.append((task, tag, amount))
            else:
                with pytest.raises(InsufficientCredits):
                    ledger().hold(self.account, task_id=task, amount=amount)
            return
        task, tag, held = self.tasks.pop(which % len(self.tasks))
        capture = held * spent // 100
        self.model.ledger.settle(tag, capture, self.now)
        if capture:
            ledger().capture(self.account, task_id=task, amount=capture)
        else:
            ledger().release(self.account, task_id=task)

    # ------------------------------------------------------------ the comparison
    @invariant()
    def balances_agree(self) -> None:
        """After every step: the account's available, held, owed and plan are the model's."""
        from atelier.wiring import ledger

        model = self.model.ledger
        account = ledger().get_account(self.account)
        seen = (account.available, account.held, account.owed, account.plan)
        expected = (model.available, model.held, model.owed, self.model.plan)
        assert seen == expected, f'(available, held, owed, plan) is {seen}, the model says {expected}'

    def books_agree(self) -> None:
        """The ledger's entries (kind and amount per payment or task) and lots (remaining and held per payment)."""
        from atelier.wiring import ledger

        model = self.model.ledger
        lots = ledger().list_lots(self.account, open_only=False)
        source = {lot.lot_id: lot.source for lot in lots}
        entries = Counter(
            (tag_of(source[e.lot] if e.kind == 'expire' and e.lot else e.id), str(e.kind), e.amount)
            for e in all_entries(self.account)
        )
        only_real, only_model = (
            sorted((entries - model.entries).elements()),
            sorted((model.entries - entries).elements()),
        )
        assert not only_real and not only_model, (
            f'entries (payment or task, kind, amount) only in the ledger: {only_real}, only in the model: {only_model}'
        )
        by_tag: dict[str, tuple[int, int]] = {}
        for lot in lots:
            remaining, held = by_tag.get(tag_of(lot.source), (0, 0))
            by_tag[tag_of(lot.source)] = (remaining + lot.remaining, held + lot.held)
        expected = model.lots_by_tag()
        assert by_tag == expected, f'lots (remaining, held) by payment: {by_tag}, the model says {expected}'

    def teardown(self) -> None:
        if sys.exc_info()[0] is None:  # at the end of a sequence, unless a failure is on its way out
            self.books_agree()


# ---------------------------------------------------------------- helpers

_TAG = re.compile(r'[0-9a-f]{10}([PT]\d+)Q')


def tag_of(business_id: str) -> str:
    """The payment or task an entry or lot belongs to (its ids carry ``{ex}{tag}Q``)."""
    found = _TAG.search(business_id)
    assert found, f'no payment or task in {business_id!r}'
    return found.group(1)


def all_entries(account_id: str) -> Iterator[Any]:
    from atelier.wiring import ledger

    cursor = None
    while True:
        page = ledger().list_entries(account_id, limit=100, cursor=cursor)
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def cents(usd: float) -> int:
    return round(usd * 100)


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


# ---------------------------------------------------------------- the world the machine runs in


@pytest.fixture(scope='module')
def provider_apis() -> Iterator[Apis]:
    with FakeStripeServer() as stripe_fake, FakeRevenueCatServer(api_key=LOCAL_API_KEY) as rc_fake:
        yield stripe_fake, rc_fake


def two_paid_plans() -> Any:
    """The shipped catalog plus a ``max`` plan (rank 2, 5,000 credits), so upgrades and downgrades exist."""
    from atelier.payments.catalog import load_commerce_catalog

    shipped = load_commerce_catalog()
    pro = shipped.plan('pro')
    assert pro is not None and (pro.rank, pro.period_credits) == PLANS['pro'] and pro.amount == STRIPE_PLANS['pro'][1]
    data = shipped.model_dump(mode='json')
    data['plans'].append(
        {
            'id': 'max',
            'name': 'Max',
            'rank': PLANS['max'][0],
            'period_credits': PLANS['max'][1],
            'amount': STRIPE_PLANS['max'][1],
            'currency': 'usd',
            'interval': 'month',
            'stripe_prices': {'test': MAX_PRICE, 'live': 'price_live_atelier_max_monthly'},
        }
    )
    return type(shipped).model_validate(data)


def prepare(
    world: World,
    apis: Apis,
    monkeypatch: pytest.MonkeyPatch,
    backend: str = 'Moto',
) -> type[PaymentsMachine]:
    """The machine bound to ``world``: one clock for the book, the ledger and the expiry job; faults; fakes."""
    import atelier.payments.service
    import functions.expire_credits.app
    from atelier.ledger import Ledger
    from atelier.payments.book import PaymentBook

    stripe_api, revenuecat_api = apis
    monkeypatch.setenv('STRIPE_API_BASE', stripe_api.base_url)
    monkeypatch.setenv('REVENUECAT_API_BASE', revenuecat_api.base_url)
    catalog = two_paid_plans()
    monkeypatch.setattr(atelier.payments.service, 'load_commerce_catalog', lambda: catalog)
    clock = Clock(START)
    for cls in (PaymentBook, Ledger):
        monkeypatch.setattr(cls, '__init__', with_clock(cls.__init__, clock))
    monkeypatch.setattr(functions.expire_credits.app, 'utc_now', clock)
    faults = LedgerFaults()
    faults.install(monkeypatch)
    world.stripe_api = stripe_api
    clear_caches()
    attributes = {
        'world': world,
        'monkeypatch': monkeypatch,
        'tables_per_sequence': backend == 'Moto',
        'clock': clock,
        'ledger_faults': faults,
        'stripe_api': stripe_api,
        'revenuecat_api': revenuecat_api,
    }
    return type(f'PaymentsMachineOn{backend}', (PaymentsMachine,), attributes)


def with_clock(init: Callable[..., None], clock: Clock) -> Callable[..., None]:
    def init_with_clock(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, 'clock': clock})

    return init_with_clock


# ---------------------------------------------------------------- the tests


def test_payments_match_their_model_on_moto(world: World, provider_apis: Apis, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the real handlers on moto and an independent model, one fresh account per sequence
    machine = prepare(world, provider_apis, monkeypatch)
    # When Hypothesis drives random sequences of purchases, refunds, deliveries, time and spending
    # Then after every step the account, its entries and its lots are the model's
    run_state_machine_as_test(machine, settings=model_settings(examples=100, steps=8))


@pytest.mark.ddb_local
def test_payments_match_their_model_on_dynamodb_local(
    local_world: World, provider_apis: Apis, monkeypatch: pytest.MonkeyPatch
) -> None:
    machine = prepare(local_world, provider_apis, monkeypatch, 'DynamoDBLocal')
    run_state_machine_as_test(machine, settings=model_settings(examples=30, steps=8))


# ---------------------------------------------------------------- the bugs the model found, as fixed sequences


def run(machine: type[PaymentsMachine], steps: Callable[[PaymentsMachine], list[Callable[[], None]]]) -> Any:
    """Run fixed steps on the machine, comparing everything with the model after each; the account at the end."""
    from atelier.wiring import ledger

    state = machine()
    state.open_account()
    for step in steps(state):
        step()
        state.balances_agree()
        state.books_agree()
    state.teardown()
    return ledger().get_account(state.account)


def test_a_refund_of_a_subscription_grant_skipped_on_a_late_retry_takes_no_other_credit(
    world: World, provider_apis: Apis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 100-credit pack, and a store subscription whose first delivery failed in the ledger after its
    # facts were recorded, retried by the store after the period ended (so its 1,000 credits were not booked)
    # When the store refunds the subscription
    machine = prepare(world, provider_apis, monkeypatch)
    account = run(
        machine,
        lambda s: [
            lambda: s.buy_pack('revenuecat:credits_100', 'paid', ['now'], 0),
            lambda: s.pay_subscription_period('revenuecat', 'pro', False, ['unreachable'], 0),
            lambda: s.time_passes(11, 0, True, False),
            lambda: s.take_money_back(0, 'refund', 100, 1, ['now'], 0),
        ],
    )
    # Then the refund takes nothing: the pack's 100 credits stay, nothing is owed
    assert (account.available, account.owed) == (100, 0)


def test_a_store_refund_after_a_refund_reversal_takes_the_credits_again(
    world: World, provider_apis: Apis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 100-credit pack bought in the app, refunded, and the refund reversed
    # When the store refunds it again (CANCELLATION, CUSTOMER_SUPPORT)
    machine = prepare(world, provider_apis, monkeypatch)
    account = run(
        machine,
        lambda s: [
            lambda: s.buy_pack('revenuecat:credits_100', 'paid', ['now'], 0),
            lambda: s.take_money_back(0, 'refund', 100, 1, ['now'], 0),
            lambda: s.take_money_back(0, 'refund', 100, 1, ['now'], 0),
            lambda: s.take_money_back(0, 'refund', 100, 1, ['now'], 0),
        ],
    )
    # Then the 100 credits are taken again
    assert (account.available, account.owed) == (0, 0)


def test_a_dispute_lost_after_a_win_whose_give_back_came_too_late_takes_the_disputed_share_once(
    world: World, provider_apis: Apis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pro period paid with Stripe (1,000 credits for 9.99), its period over (unused, not yet booked out),
    # and a dispute of 5 % of the charge (49 credits) opened, won and then lost, each report delivered while the
    # ledger is unreachable
    machine = prepare(world, provider_apis, monkeypatch)
    account = run(
        machine,
        lambda s: [
            lambda: s.time_passes(0, 0, False, True),
            lambda: s.pay_subscription_period('stripe', 'pro', False, ['now', 'now', 'now'], 0),
            lambda: s.time_passes(4, 20, True, True),
            lambda: s.time_passes(25, 3, False, False),
            lambda: s.take_money_back(34, 'dispute', 5, 3, ['unreachable', 'unreachable', 'unreachable'], 0),
            # When Stripe retries them: the dispute's take, its give-back (refused: the period is over), the take
            # planned on that give-back
            lambda: s.time_passes(0, 0, True, False),
        ],
    )
    # Then the lost dispute takes its 49 credits once: the give-back that could not be booked left them taken,
    # so nothing more is taken for the loss (the expired lot's credit is not spendable: they are owed)
    assert (account.available, account.owed) == (951, 49)


def test_a_refund_queued_behind_a_give_back_that_came_too_late_is_taken_by_the_same_delivery(
    world: World, provider_apis: Apis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a pro period paid with Stripe (1,000 credits for 9.99), a dispute of 2 % opened (19 credits taken),
    # the period over, and the dispute won while the ledger was unreachable (its give-back stays queued)
    machine = prepare(world, provider_apis, monkeypatch)
    state = machine()
    state.open_account()
    steps: list[Callable[[], None]] = [
        lambda: state.pay_subscription_period('stripe', 'pro', False, ['now', 'now', 'now'], 0),
        lambda: state.take_money_back(0, 'dispute', 2, 1, ['now'], 0),
        lambda: state.time_passes(11, 0, False, False),
        lambda: state.take_money_back(0, 'dispute', 2, 1, ['unreachable'], 0),
        # When half the charge is refunded: the ledger refuses the give-back (its period is over), and the
        # claw-back queued behind it is planned anew
        lambda: state.take_money_back(0, 'refund', 50, 1, ['now'], 0),
    ]
    for step in steps:
        step()
        state.balances_agree()
        state.books_agree()
    # Then the refund's delivery books that claw-back itself: 499 credits taken in all (the 19 the dispute took
    # stay taken), owed since the period's lot has expired; nothing waits for another event of the payment
    account = world.get(state.account)
    assert (account.available, account.owed) == (501, 480)
    state.time_passes(0, 0, True, False)  # the won dispute's retry changes nothing more
    state.balances_agree()
    state.teardown()


def test_a_second_store_refund_brought_by_the_backfill_is_taken(
    world: World, provider_apis: Apis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 100-credit pack bought in the app, refunded (a backfill ran meanwhile), the refund reversed,
    # and refunded again, the webhook of that last refund lost
    machine = prepare(world, provider_apis, monkeypatch)
    state = machine()
    state.open_account()
    state.buy_pack('revenuecat:credits_100', 'paid', ['now'], 0)
    state.take_money_back(0, 'refund', 100, 1, ['now'], 0)
    state.backfill('revenuecat')
    state.take_money_back(0, 'refund', 100, 1, ['now'], 0)
    state.take_money_back(0, 'refund', 100, 1, ['lost'], 0)
    # When the backfill reconciles the subscriber, whose purchase shows the newer refund
    subscriber, _ = state.store_subscriber()
    revenuecat_api = provider_apis[1]
    revenuecat_api.set_subscriber(state.account, subscriber)
    world.backfill({'revenuecat': {'app_user_ids': [state.account]}})
    # Then the credits are taken again, as the webhook would have
    assert (world.get(state.account).available, world.get(state.account).owed) == (0, 0)
