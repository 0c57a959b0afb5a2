"""The Stripe events the backend handles (``atelier.payments.stripe_events``), built as Stripe would send them.

A purchase creates new objects (a Checkout Session, a PaymentIntent and its charge, a subscription). A
follow-up refers to an earlier one: ``--payment``, ``--subscription``, ``--dispute``, ``--session``, or by
default the account's latest of them that the running fake Stripe knows (it remembers every event sent
through it or through these triggers). An id the fake does not know (an object made elsewhere, or before
``make dev`` restarted) is sent as given, with what the options say of it (``--amount`` for a payment), as
the RevenueCat triggers do with ``--transaction`` and ``--product``. Events are ``created`` now, in whole
seconds as Stripe's are: two events of the same second tie (docs/payments.md, "Ordering").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from infra.local.payment_events import (
    DAY,
    charge,
    charge_id,
    checkout_session,
    customer_id,
    dispute,
    invoice,
    stripe_event,
    subscription_object,
    uid,
)
from infra.local.triggers.spec import Builder, Option, Request, Trigger, TriggerError

if TYPE_CHECKING:
    from atelier.payments.catalog import Pack, Plan

Record = dict[str, Any]

PACK = Option(('--pack',), {'default': 'pack_100', 'help': 'the pack bought (default pack_100)'})
PLAN = Option(('--plan',), {'help': "the plan (default: the subscription's, else pro)"})
PAYMENT = Option(
    ('--payment',),
    {'metavar': 'PI', 'help': "the PaymentIntent (pi_...) of an earlier purchase (default: the account's latest)"},
)
SUBSCRIPTION = Option(
    ('--subscription',), {'metavar': 'SUB', 'help': "the subscription (sub_...; default: the account's latest)"}
)
DISPUTE = Option(('--dispute',), {'metavar': 'DU', 'help': "the dispute (du_...; default: the account's latest)"})
SESSION = Option(
    ('--session',),
    {'metavar': 'CS', 'help': "the Checkout Session (default: the account's latest unpaid one, else a new one)"},
)


# ---------------------------------------------------------------- checkout


def checkout_completed(request: Request) -> dict[str, Any]:
    """A Checkout Session completed: a pack (payment mode) or, with ``--plan``, a subscription."""
    account = request.account_id
    status = 'unpaid' if request.arg('unpaid') else 'paid'
    customer = _customer(request)
    if request.arg('plan'):
        plan = _plan(request, request.arg('plan'))
        session = checkout_session(
            account,
            plan_id=plan.id,
            payment_status=status,
            amount_total=plan.amount or 0,
            customer=customer,
            subscription=uid('sub'),
        )
    else:
        pack = _pack(request, request.arg('pack'))
        session = checkout_session(
            account, pack_id=pack.id, payment_status=status, amount_total=pack.amount, customer=customer
        )
    return stripe_event('checkout.session.completed', session, created=request.now)


def async_payment(event_type: str) -> Builder:
    succeeded = event_type == 'checkout.session.async_payment_succeeded'

    def build(request: Request) -> dict[str, Any]:
        """The delayed payment of a session that completed unpaid, succeeded or failed."""
        known = _latest(request, 'sessions', request.arg('session'), _unpaid_pack_checkout)
        if known is None and not request.arg('session'):
            raise TriggerError(
                f'no unpaid checkout of {request.account_id} is known to the fake Stripe: trigger '
                'checkout.session.completed --unpaid first (a delayed payment method), or pass --session CS'
            )
        pack = _pack(request, (known or {}).get('pack_id') or request.arg('pack'))
        session = checkout_session(
            request.account_id,
            pack_id=pack.id,
            payment_status='paid' if succeeded else 'unpaid',
            session_id=(known or {}).get('id') or request.arg('session'),
            payment_intent=(known or {}).get('payment_intent'),
            amount_total=pack.amount,
            customer=_customer(request),
        )
        return stripe_event(event_type, session, created=request.now)

    return build


# ---------------------------------------------------------------- subscriptions


def invoice_paid(request: Request) -> dict[str, Any]:
    """A subscription invoice paid: the first one, a renewal (the next period) or, with an upgrade, a top-up."""
    known = _latest(request, 'subscriptions', request.arg('subscription'), _live)
    plan = _plan(request, request.arg('plan') or _plan_of(request, known))
    renewal = bool(known and known.get('invoiced_until'))
    reason = request.arg('billing_reason') or ('subscription_cycle' if renewal else 'subscription_create')
    start, end = _period(request, known, reason)
    amount = (plan.amount or 0) if request.arg('amount') is None else int(request.arg('amount'))
    paid = invoice(
        request.account_id,
        subscription=(known or {}).get('id') or request.arg('subscription') or uid('sub'),
        billing_reason=reason,
        amount_paid=amount,
        price=_plan_price(plan),
        period_start=start,
        period_end=end,
        customer=(known or {}).get('customer') or _customer(request),
    )
    return stripe_event('invoice.paid', paid, created=request.now)


def subscription_changed(event_type: str) -> Builder:
    def build(request: Request) -> dict[str, Any]:
        """A subscription created, updated (status, cancel at period end, plan) or deleted."""
        known = _latest(request, 'subscriptions', request.arg('subscription'), _live)
        if known is None and event_type != 'customer.subscription.created' and not request.arg('subscription'):
            raise TriggerError(
                f'no subscription of {request.account_id} is known: pass --subscription sub_..., '
                'or trigger invoice.paid (or pay a plan on the checkout page) first'
            )
        deleted = event_type == 'customer.subscription.deleted'
        plan = _plan(request, request.arg('plan') or _plan_of(request, known))
        subscription = subscription_object(
            request.account_id,
            subscription_id=(known or {}).get('id') or request.arg('subscription') or uid('sub'),
            status='canceled' if deleted else request.arg('status') or 'active',
            price=_plan_price(plan),
            period_end=(known or {}).get('period_end') or request.now + 30 * DAY,
            cancel_at_period_end=bool(request.arg('cancel_at_period_end')),
            customer=(known or {}).get('customer') or _customer(request),
        )
        return stripe_event(event_type, subscription, created=request.now)

    return build


# ---------------------------------------------------------------- refunds and disputes


def charge_refunded(request: Request) -> dict[str, Any]:
    """A refund of an earlier payment: ``--amount`` cents more (default: all that is left)."""
    payment = _payment(request)
    amount, refunded = int(payment['amount']), int(payment.get('amount_refunded') or 0)
    left = amount - refunded
    more = left if request.arg('amount') is None else int(request.arg('amount'))
    if left <= 0 or not 0 < more <= left:
        asked = '' if request.arg('amount') is None else f'--amount {more}: '
        raise TriggerError(f'{asked}{payment["id"]} has {left} of {amount} cents left to refund')
    refund = charge(
        payment_intent=payment['id'],
        amount=amount,
        amount_refunded=refunded + more,
        charge_id=payment.get('charge'),
    )
    return stripe_event('charge.refunded', refund, created=request.now)


def dispute_created(request: Request) -> dict[str, Any]:
    """A dispute (chargeback) opened on an earlier payment, for ``--amount`` cents (default: all of it)."""
    payment = _payment(request)
    amount = int(payment['amount']) if request.arg('amount') is None else int(request.arg('amount'))
    if not 0 < amount <= int(payment['amount']):
        raise TriggerError(f'--amount {amount}: a dispute of {payment["id"]} is 1 to {payment["amount"]} cents')
    opened = dispute(
        payment_intent=payment['id'],
        amount=amount,
        status='needs_response',
        dispute_id=uid('du'),
        charge_id=payment.get('charge') or 'ch_x',
    )
    return stripe_event('charge.dispute.created', opened, created=request.now)


def dispute_moved(event_type: str) -> Builder:
    def build(request: Request) -> dict[str, Any]:
        """A report on an earlier dispute: funds withdrawn, reinstated, or the dispute closed won or lost."""
        payment, found = _dispute(request)
        status = {
            'charge.dispute.funds_withdrawn': 'needs_response',
            'charge.dispute.funds_reinstated': 'won',
        }.get(event_type) or request.arg('status')
        report = dispute(
            payment_intent=payment['id'],
            amount=int(found['amount']),
            status=str(status),
            dispute_id=str(found['id']),
            charge_id=payment.get('charge') or 'ch_x',
        )
        return stripe_event(event_type, report, created=request.now)

    return build


# ---------------------------------------------------------------- what the fake Stripe knows


def _latest(
    request: Request, kind: str, wanted: str | None, match: Callable[[Record], bool] | None = None
) -> Record | None:
    """The record ``wanted`` (by id), else the newest one (that ``match`` accepts), else None."""
    records: list[Record] = list(request.known.get(kind) or [])
    if wanted:
        return next((r for r in records if r.get('id') == wanted), None)
    return next((r for r in records if match is None or match(r)), None)


def _unpaid_pack_checkout(session: Record) -> bool:
    return session.get('mode') == 'payment' and session.get('payment_status') == 'unpaid'


def _live(subscription: Record) -> bool:
    return subscription.get('status') not in ('canceled', 'incomplete_expired')


def _payment(request: Request) -> Record:
    wanted = request.arg('payment')
    found = _latest(request, 'payments', wanted, lambda p: p.get('status') == 'succeeded')
    if found is not None:
        return found
    if wanted:  # a payment made elsewhere: sent as given, with --amount as what was paid
        if request.arg('amount') is None:
            raise TriggerError(
                f'the fake Stripe does not know the payment {wanted} of {request.account_id}: pass --amount CENTS '
                '(what was paid) to send the event about it as given'
            )
        paid = int(request.arg('amount'))
        return {'id': wanted, 'amount': paid, 'amount_refunded': 0, 'charge': charge_id(wanted)}
    raise TriggerError(
        f'no payment of {request.account_id} is known to the fake Stripe: buy something first (the checkout '
        'page, or trigger stripe checkout.session.completed / invoice.paid), then refund or dispute it'
    )


def _dispute(request: Request) -> tuple[Record, Record]:
    wanted = request.arg('dispute')
    found = [
        (payment, d)
        for payment in request.known.get('payments') or []
        for d in payment.get('disputes') or []
        if not wanted or d.get('id') == wanted
    ]
    if not found:
        raise TriggerError(
            f'no dispute {wanted or ""} of {request.account_id} is known: trigger charge.dispute.created first'
        )
    return max(found, key=lambda pair: int(pair[1]['seq']))


def _customer(request: Request) -> str:
    return str(request.known.get('customer') or customer_id(request.account_id))


def _pack(request: Request, pack_id: Any) -> Pack:
    pack = request.catalog.pack(pack_id)
    if pack is None:
        raise TriggerError(f'no pack {pack_id!r}: one of {", ".join(p.id for p in request.catalog.packs)}')
    return pack


def _plan(request: Request, plan_id: Any) -> Plan:
    plan = request.catalog.plan(plan_id)
    if plan is None or plan.stripe_prices is None:
        sold = ', '.join(p.id for p in request.catalog.sellable_plans())
        raise TriggerError(f'no plan {plan_id!r} is sold with Stripe: one of {sold}')
    return plan


def _plan_price(plan: Plan) -> str:
    assert plan.stripe_prices is not None  # _plan takes only plans sold with Stripe
    return plan.stripe_prices.test


def _plan_of(request: Request, subscription: Record | None) -> str:
    """The plan of a known subscription (by its price or its checkout's plan), else ``pro``."""
    if subscription is None:
        return 'pro'
    by_price = request.catalog.plan_by_price(subscription.get('price'), 'test')
    return by_price.id if by_price is not None else str(subscription.get('plan_id') or 'pro')


def _period(request: Request, subscription: Record | None, reason: str) -> tuple[int, int]:
    """The invoice line's period: the current one (first invoice, upgrade), or the next after the last paid one."""
    current_end = int((subscription or {}).get('period_end') or 0)
    paid_until = int((subscription or {}).get('invoiced_until') or 0)
    if reason == 'subscription_update' and current_end:
        return request.now, current_end
    if reason == 'subscription_cycle':
        start = max(paid_until or current_end, request.now - 60)
        return start, start + 30 * DAY
    start = request.now - 60
    return start, current_end if current_end > request.now else start + 30 * DAY


TRIGGERS: tuple[Trigger, ...] = (
    Trigger(
        'stripe',
        'checkout.session.completed',
        'a Checkout Session paid: grants the pack (--plan: starts the subscription; its invoice.paid grants)',
        checkout_completed,
        (
            PACK,
            Option(('--plan',), {'help': 'a subscription checkout of this plan (e.g. pro) instead of a pack'}),
            Option(('--unpaid',), {'action': 'store_true', 'help': 'a delayed payment method: completed, not paid'}),
        ),
    ),
    Trigger(
        'stripe',
        'checkout.session.async_payment_succeeded',
        "the delayed payment of a session succeeded: grants its pack (once, with the session's completion)",
        async_payment('checkout.session.async_payment_succeeded'),
        (SESSION, PACK),
    ),
    Trigger(
        'stripe',
        'checkout.session.async_payment_failed',
        'the delayed payment of a session failed: grants nothing',
        async_payment('checkout.session.async_payment_failed'),
        (SESSION, PACK),
    ),
    Trigger(
        'stripe',
        'invoice.paid',
        "a subscription period paid: plan on, the plan's credits until the period ends (again: the next period)",
        invoice_paid,
        (
            SUBSCRIPTION,
            PLAN,
            Option(
                ('--billing-reason',),
                {
                    'choices': ('subscription_create', 'subscription_cycle', 'subscription_update'),
                    'help': 'default: subscription_create for a new subscription, subscription_cycle after',
                },
            ),
            Option(('--amount',), {'type': int, 'help': "cents paid (default: the plan's price; 0: a trial)"}),
        ),
    ),
    *(
        Trigger(
            'stripe',
            f'customer.subscription.{change}',
            f'a subscription {change}: the plan follows its status (credits stay)',
            subscription_changed(f'customer.subscription.{change}'),
            (
                SUBSCRIPTION,
                PLAN,
                *(
                    ()
                    if change == 'deleted'
                    else (
                        Option(
                            ('--status',),
                            {
                                'default': 'active',
                                'choices': ('active', 'trialing', 'past_due', 'unpaid', 'canceled', 'incomplete'),
                                'help': 'the subscription status (default active)',
                            },
                        ),
                        Option(('--cancel-at-period-end',), {'action': 'store_true', 'help': 'auto-renew off'}),
                    )
                ),
            ),
        )
        for change in ('created', 'updated', 'deleted')
    ),
    Trigger(
        'stripe',
        'charge.refunded',
        'a refund of an earlier payment: takes back its credits in proportion (partial with --amount)',
        charge_refunded,
        (PAYMENT, Option(('--amount',), {'type': int, 'help': 'cents refunded now (default: all that is left)'})),
    ),
    Trigger(
        'stripe',
        'charge.dispute.created',
        'a chargeback opened on an earlier payment: takes back the disputed share of its credits',
        dispute_created,
        (PAYMENT, Option(('--amount',), {'type': int, 'help': 'cents disputed (default: the whole payment)'})),
        next_step='then: trigger stripe charge.dispute.closed --status won (gives back) or --status lost',
    ),
    Trigger(
        'stripe',
        'charge.dispute.funds_withdrawn',
        'the disputed money was withdrawn: takes back the disputed share (once with its creation)',
        dispute_moved('charge.dispute.funds_withdrawn'),
        (DISPUTE,),
    ),
    Trigger(
        'stripe',
        'charge.dispute.funds_reinstated',
        'the disputed money came back: gives back what the dispute took',
        dispute_moved('charge.dispute.funds_reinstated'),
        (DISPUTE,),
    ),
    Trigger(
        'stripe',
        'charge.dispute.closed',
        'a dispute closed: won (or warning_closed) gives back what it took, lost keeps it taken',
        dispute_moved('charge.dispute.closed'),
        (DISPUTE, Option(('--status',), {'required': True, 'choices': ('won', 'lost', 'warning_closed')})),
    ),
)
