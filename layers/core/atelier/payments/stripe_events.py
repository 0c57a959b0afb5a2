"""What each Stripe event means for credits and plans.

Business keys, never the event id: a pack is granted once per Checkout Session
(``stripe:checkout:{session}``), a subscription period once per invoice (``stripe:invoice:{invoice}``);
refunds and disputes change what a payment (a PaymentIntent) keeps. Credits come from the commerce
catalog: the pack id we put on the session when we created it, the plan of the invoice line's price.

Payloads are read in both the current shape (API ``2025-03-31.basil`` and later: ``invoice.parent``,
``lines.data[].pricing``, ``items.data[].current_period_end``) and the older one.

The payment of a subscription period is keyed like any other, by its PaymentIntent (``stripe:{pi}``), so that
``charge.refunded`` and disputes of it find the grant. A webhook's invoice does not say which PaymentIntent
paid it: ``invoice.payments`` is an *includable* property, present only when expanded
(https://docs.stripe.com/api/invoices/object#invoice_object-payments), and ``invoice.payment_intent`` is gone
since ``basil``. So unless the invoice carries one (expanded ``payments``, or the legacy field), it is asked of
Stripe (:class:`InvoicePayments`, ``GET /v1/invoice_payments?invoice=``) *before* anything is applied: when
Stripe cannot answer, the event fails whole (503, retried). An invoice without a paid PaymentIntent (a $0
trial) is keyed by the invoice (``stripe:{invoice}``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

from atelier.payments.book import PaymentBook
from atelier.payments.catalog import Mode, Plan
from atelier.payments.errors import ModeMismatch, PaymentsUnavailable
from atelier.payments.inbox import Outcome
from atelier.payments.state import GrantFact, PaymentState, Subscription

Handler = Callable[[dict[str, Any], dict[str, Any]], Outcome]


class InvoicePayments(Protocol):
    """Which PaymentIntent paid an invoice (:class:`atelier.payments.stripe_gateway.StripeInvoicePayments`)."""

    def paid_payment_intent(self, invoice_id: str) -> str | None:
        """The PaymentIntent of the invoice's paid payment, None when there is none; raises
        :class:`PaymentsUnavailable` when the provider cannot tell now."""
        ...


class StripeEvents:
    """Applies verified Stripe events (as dicts) to the payment book.

    ``invoice_payments`` resolves the PaymentIntent of an invoice that does not carry it (webhooks never do);
    without it such an invoice fails (retried) rather than being keyed where its refunds would not find it.
    """

    def __init__(self, book: PaymentBook, *, live: bool, invoice_payments: InvoicePayments | None = None) -> None:
        self._book = book
        self._invoice_payments = invoice_payments
        self._catalog = book.catalog
        self._live = live
        self._mode: Mode = 'live' if live else 'test'
        self._handlers: dict[str, Handler] = {
            'checkout.session.completed': self._checkout,
            'checkout.session.async_payment_succeeded': self._checkout,
            'checkout.session.async_payment_failed': self._checkout,
            'invoice.paid': self._invoice_paid,
            'customer.subscription.created': self._subscription,
            'customer.subscription.updated': self._subscription,
            'customer.subscription.deleted': self._subscription,
            'charge.refunded': self._refund,
            'charge.dispute.created': self._dispute,
            'charge.dispute.funds_withdrawn': self._dispute,
            'charge.dispute.funds_reinstated': self._dispute,
            'charge.dispute.closed': self._dispute,
        }

    @property
    def types(self) -> tuple[str, ...]:
        """The event types that change something (what the backfill asks the Events API for)."""
        return tuple(self._handlers)

    def apply(self, event: dict[str, Any]) -> Outcome:
        if bool(event.get('livemode')) != self._live:
            if self._live:
                return Outcome('ignored', 'a test-mode event reached a live stage')
            raise ModeMismatch('A live-mode event reached a test stage; check the webhook endpoint configuration.')
        handler = self._handlers.get(str(event.get('type')))
        if handler is None:
            return Outcome('ignored', f'{event.get("type")} is not used')
        obj = (event.get('data') or {}).get('object')
        if not isinstance(obj, dict):
            return Outcome('parked', 'the event has no data.object')
        return handler(event, obj)

    # ---------------------------------------------------------------- checkout
    def _checkout(self, event: dict[str, Any], session: dict[str, Any]) -> Outcome:
        metadata = _dict(session.get('metadata'))
        account_id = checkout_account(session)
        if not self._book.account_exists(account_id):
            return Outcome('parked', f'unknown account {account_id!r}')
        assert account_id is not None
        customer = _id(session.get('customer'))
        if customer:
            self._book.remember_customer(customer, account_id)
        if session.get('mode') == 'subscription':
            return self._subscription_checkout(event, session, account_id)
        if session.get('mode') != 'payment':
            return Outcome('ignored', f'checkout mode {session.get("mode")!r} is not sold', account_id)
        pack = self._catalog.pack(_str(metadata.get('pack_id')))
        if pack is None:
            return Outcome('parked', f'unknown pack {metadata.get("pack_id")!r}', account_id)
        session_id = str(session.get('id'))
        key = f'stripe:{_id(session.get("payment_intent")) or session_id}'
        if event.get('type') == 'checkout.session.async_payment_failed':
            self._book.apply_payment(key, lambda s: s.with_failure())
            return Outcome('processed', 'the delayed payment failed; nothing granted', account_id)
        if session.get('payment_status') != 'paid':
            return Outcome('processed', f'payment {session.get("payment_status")}; granted when paid', account_id)
        grant = GrantFact(
            business_id=f'stripe:checkout:{session_id}',
            account_id=account_id,
            credits=pack.credits,
            amount=_int(session.get('amount_total')),
            currency=_str(session.get('currency')),
            kind='paid',
            note=f'Stripe {pack.id}',
        )
        state = self._book.apply_payment(key, lambda s: s.with_grant(grant))
        return Outcome('processed', _granted(state, grant), account_id)

    def _subscription_checkout(self, event: dict[str, Any], session: dict[str, Any], account_id: str) -> Outcome:
        plan = self._catalog.plan(_str(_dict(session.get('metadata')).get('plan_id')))
        subscription_id = _id(session.get('subscription'))
        if plan is None or subscription_id is None:
            return Outcome('parked', 'subscription checkout without a known plan or subscription', account_id)
        if session.get('payment_status') not in ('paid', 'no_payment_required'):
            return Outcome('processed', 'subscription not paid yet', account_id)
        report = Subscription(
            provider='stripe', plan=plan.id, status='active', entitled=True, event_at=_event_ms(event)
        )
        self._book.apply_plan(account_id, lambda s: s.with_subscription(f'stripe:{subscription_id}', report))
        return Outcome('processed', f'{plan.id} subscription started; credits come with its paid invoice', account_id)

    # ---------------------------------------------------------------- subscriptions
    def _invoice_paid(self, event: dict[str, Any], invoice: dict[str, Any]) -> Outcome:
        subscription_id = _invoice_subscription(invoice)
        if subscription_id is None:
            return Outcome('ignored', 'not a subscription invoice')
        account_id = self._subscriber(_invoice_subscription_metadata(invoice), invoice.get('customer'))
        if account_id is None:
            return Outcome('parked', f'no account for subscription {subscription_id}')
        line = self._plan_line(invoice)
        if line is None:
            return Outcome('parked', 'no invoice line with a plan price of the catalog', account_id)
        plan, period_end = line
        amount_paid = _int(invoice.get('amount_paid')) or 0
        grants = amount_paid > 0 or self._catalog.policy.trial_grants_credits
        # Resolved before anything is applied: a lookup that fails leaves the event whole for Stripe's retry.
        payment_key = self._invoice_payment_key(invoice, amount_paid) if grants else None
        sub_key = f'stripe:{subscription_id}'
        report = Subscription(
            provider='stripe',
            plan=plan.id,
            status='active',
            entitled=True,
            event_at=_event_ms(event),
            period_end=period_end,
        )
        self._book.apply_plan(account_id, lambda s: s.with_subscription(sub_key, report))
        if payment_key is None:
            return Outcome(
                'processed', f'{plan.id}: $0 invoice ({invoice.get("billing_reason")}); no credits', account_id
            )
        business_id = f'stripe:invoice:{invoice.get("id")}'
        state, grant = self._book.grant_period(
            payment_key,
            account_id=account_id,
            business_id=business_id,
            subscription=sub_key,
            period_end=period_end,
            plan_credits=plan.period_credits,
            amount=amount_paid,
            currency=_str(invoice.get('currency')),
            note=f'Stripe {plan.id} period ({invoice.get("billing_reason")})',
        )
        return Outcome('processed', _granted(state, grant), account_id)

    def _subscription(self, event: dict[str, Any], subscription: dict[str, Any]) -> Outcome:
        subscription_id = str(subscription.get('id'))
        account_id = self._subscriber(_dict(subscription.get('metadata')), subscription.get('customer'))
        if account_id is None:
            return Outcome('parked', f'no account for subscription {subscription_id}')
        items = _list(_dict(subscription.get('items')).get('data'))
        plans = [(p, item) for item in items if (p := self._catalog.plan_by_price(_price_id(item), self._mode))]
        if not plans:
            return Outcome('parked', f'subscription {subscription_id} has no plan price of the catalog', account_id)
        plan, item = max(plans, key=lambda pair: pair[0].rank)
        deleted = event.get('type') == 'customer.subscription.deleted'
        status = 'canceled' if deleted else str(subscription.get('status'))
        report = Subscription(
            provider='stripe',
            plan=plan.id,
            status=status,
            entitled=not deleted and status in self._catalog.policy.entitled_stripe_statuses,
            final=deleted or status in ('canceled', 'incomplete_expired'),
            event_at=_event_ms(event),
            period_end=_int(item.get('current_period_end')) or _int(subscription.get('current_period_end')),
            will_renew=not subscription.get('cancel_at_period_end'),
        )
        state = self._book.apply_plan(account_id, lambda s: s.with_subscription(f'stripe:{subscription_id}', report))
        return Outcome('processed', f'subscription {status}; plan {self._book.plan_of(state)}', account_id)

    # ---------------------------------------------------------------- refunds and disputes
    def _refund(self, event: dict[str, Any], charge: dict[str, Any]) -> Outcome:
        charge_id = str(charge.get('id'))
        cumulative = _int(charge.get('amount_refunded')) or 0
        key = f'stripe:{_id(charge.get("payment_intent")) or charge_id}'
        state = self._book.apply_payment(
            key,
            lambda s: s.with_refund(
                f'stripe:refund:{charge_id}:{cumulative}',
                cumulative=cumulative,
                charge_amount=_int(charge.get('amount')),
            ),
        )
        return _reversal_outcome(state, f'refunded {cumulative} of {charge.get("amount")}')

    def _dispute(self, event: dict[str, Any], dispute: dict[str, Any]) -> Outcome:
        dispute_id = str(dispute.get('id'))
        status = _dispute_status(str(event.get('type')), str(dispute.get('status')))
        if status is None:
            return Outcome('ignored', f'dispute status {dispute.get("status")!r} changes nothing')
        key = f'stripe:{_id(dispute.get("payment_intent")) or _id(dispute.get("charge"))}'
        state = self._book.apply_payment(
            key,
            lambda s: s.with_chargeback(
                f'stripe:dispute:{dispute_id}:{status}',
                chargeback_id=f'dispute:{dispute_id}',
                amount=_int(dispute.get('amount')),
                status=status,
            ),
        )
        return _reversal_outcome(state, f'dispute {status}')

    # ---------------------------------------------------------------- helpers
    def _invoice_payment_key(self, invoice: dict[str, Any], amount_paid: int) -> str:
        """``stripe:{pi}`` of the PaymentIntent that paid the invoice, else ``stripe:{invoice}`` (nothing paid)."""
        invoice_id = str(invoice.get('id'))
        carried, intent = _carried_payment_intent(invoice)
        if not carried and amount_paid > 0:
            if self._invoice_payments is None:
                raise PaymentsUnavailable(
                    f'invoice {invoice_id} does not say which PaymentIntent paid it, and Stripe cannot be asked'
                )
            intent = self._invoice_payments.paid_payment_intent(invoice_id)
        return f'stripe:{intent or invoice_id}'

    def _subscriber(self, metadata: dict[str, Any], customer: Any) -> str | None:
        """The account of a subscription: our own metadata first, else the customer of an earlier checkout."""
        candidates = [_str(metadata.get('account_id'))]
        customer_id = _id(customer)
        if customer_id:
            candidates.append(self._book.account_of_customer(customer_id))
        return next((c for c in candidates if c and self._book.account_exists(c)), None)

    def _plan_line(self, invoice: dict[str, Any]) -> tuple[Plan, int] | None:
        """The highest plan among the invoice's charged lines, with the end of the period it pays for."""
        found: list[tuple[Plan, int]] = []
        for line in _list(_dict(invoice.get('lines')).get('data')):
            plan = self._catalog.plan_by_price(_line_price(line), self._mode)
            period_end = _int(_dict(line.get('period')).get('end'))
            if plan is not None and period_end and (_int(line.get('amount')) or 0) >= 0:
                found.append((plan, period_end))
        return max(found, key=lambda pair: (pair[0].rank, pair[1]), default=None)


def _granted(state: PaymentState, grant: GrantFact) -> str:
    if state.grant is not None and state.grant.business_id != grant.business_id:
        return f'payment already granted by {state.grant.business_id}; {grant.business_id} kept aside'
    kept = grant.credits - state.clawed
    return f'{grant.credits} credits ({grant.business_id}); {state.clawed} taken back, {kept} kept'


def _reversal_outcome(state: PaymentState, what: str) -> Outcome:
    if state.grant is None:
        return Outcome('processed', f'{what}; recorded until the payment is seen paid')
    return Outcome('processed', f'{what}; {state.clawed} credits taken back', state.grant.account_id)


def _dispute_status(event_type: str, status: str) -> Literal['open', 'lost', 'won'] | None:
    if event_type in ('charge.dispute.created', 'charge.dispute.funds_withdrawn'):
        return 'open'
    if event_type == 'charge.dispute.funds_reinstated':
        return 'won'
    if status in ('won', 'warning_closed'):
        return 'won'
    if status == 'lost':
        return 'lost'
    return None


def checkout_account(session: dict[str, Any]) -> str | None:
    """The account a Checkout Session is for: its ``client_reference_id``, else our ``metadata.account_id``."""
    return _str(session.get('client_reference_id')) or _str(_dict(session.get('metadata')).get('account_id'))


def _invoice_subscription(invoice: dict[str, Any]) -> str | None:
    details = _dict(_dict(invoice.get('parent')).get('subscription_details'))
    return _id(details.get('subscription')) or _id(invoice.get('subscription'))


def _invoice_subscription_metadata(invoice: dict[str, Any]) -> dict[str, Any]:
    details = _dict(_dict(invoice.get('parent')).get('subscription_details'))
    return _dict(details.get('metadata')) or _dict(_dict(invoice.get('subscription_details')).get('metadata'))


def invoice_payment_intent(invoice: dict[str, Any]) -> str | None:
    """The PaymentIntent an invoice object itself names (expanded ``payments``, or the pre-basil field), if any."""
    return _carried_payment_intent(invoice)[1]


def _carried_payment_intent(invoice: dict[str, Any]) -> tuple[bool, str | None]:
    """(whether the invoice says how it was paid, the PaymentIntent it names).

    Expanded ``payments`` (the first few InvoicePayments): a paid one's PaymentIntent (our older builders wrote
    no status). Pre-basil: ``payment_intent`` (null when nothing was charged). Otherwise the invoice is silent.
    """
    if isinstance(invoice.get('payments'), dict):
        payments = _list(_dict(invoice.get('payments')).get('data'))
        for payment in sorted(payments, key=lambda p: p.get('status') != 'paid'):
            details = _dict(payment.get('payment'))
            if payment.get('status') in ('paid', None) and (intent := _id(details.get('payment_intent'))):
                return True, intent
        return not _dict(invoice.get('payments')).get('has_more'), None  # more pages: ask Stripe
    if 'payment_intent' in invoice:
        return True, _id(invoice.get('payment_intent'))
    return False, None


def _line_price(line: dict[str, Any]) -> str | None:
    details = _dict(_dict(line.get('pricing')).get('price_details'))
    return _id(details.get('price')) or _id(line.get('price'))


def _price_id(item: dict[str, Any]) -> str | None:
    return _id(item.get('price')) or _id(item.get('plan'))


def _event_ms(event: dict[str, Any]) -> int:
    return (_int(event.get('created')) or 0) * 1000


def _id(value: Any) -> str | None:
    """An object reference: Stripe sends an id, or the object itself when expanded."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get('id'), str):
        return str(value['id'])
    return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
