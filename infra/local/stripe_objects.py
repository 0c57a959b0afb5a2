"""What the fake Stripe knows happened to each account: its payments, subscriptions and checkout sessions.

Real Stripe keeps the objects an event is about, so a later event (a refund, a dispute, a renewal) refers to
them. Offline, :class:`StripeObjects` derives the same from the events the fake sent (its checkout page) or
was told about (``python -m infra.local trigger``), so a follow-up can name "the account's latest payment":

    objects = StripeObjects()
    objects.record(event)                # any Stripe event, as sent to the webhook
    objects.account('acc_1')             # {'customer', 'payments', 'subscriptions', 'sessions'}, newest first

A payment is keyed by its PaymentIntent (as the backend keys it) and has one charge (:func:`charge_id`).
Each invoice it is told about has its InvoicePayments (``GET /v1/invoice_payments?invoice=``): those the event
carried (expanded ``payments``, or the pre-basil ``payment_intent``), else, for an invoice with money paid,
one paid by :func:`~infra.local.payment_events.invoice_intent` (a $0 invoice has none). The events are read
with the backend's own readers (:mod:`atelier.payments.stripe_events`), so both agree on what they say.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable
from typing import Any

from atelier.payments.stripe_events import (
    _dict,
    _invoice_subscription,
    _invoice_subscription_metadata,
    _line_price,
    _list,
    _str,
    checkout_account,
)
from infra.local.payment_events import charge_id, customer_id, invoice_intent, invoice_payment

Record = dict[str, Any]


class StripeObjects:
    def __init__(self) -> None:
        self._payments: dict[str, Record] = {}
        self._subscriptions: dict[str, Record] = {}
        self._sessions: dict[str, Record] = {}
        self._customers: dict[str, str] = {}  # customer -> account
        self._invoice_payments: dict[str, list[Record]] = {}  # invoice -> its InvoicePayments
        self._order = itertools.count(1)
        self._lock = threading.Lock()
        self._derive: dict[str, Callable[[str, dict[str, Any]], None]] = {
            'checkout.session': self._session,
            'invoice': self._invoice,
            'subscription': self._subscription,
            'charge': self._charge,
            'dispute': self._dispute,
        }

    def record(self, event: dict[str, Any]) -> None:
        """Remember what ``event`` says about its object (other objects and unknown payments are left alone)."""
        obj = (event.get('data') or {}).get('object')
        if not isinstance(obj, dict):
            return
        derive = self._derive.get(str(obj.get('object')))
        if derive is not None:
            with self._lock:
                derive(str(event.get('type')), obj)

    def account(self, account_id: str) -> dict[str, Any]:
        """The account's customer and its payments, subscriptions and checkout sessions, newest first."""
        with self._lock:
            customer = next((c for c, a in self._customers.items() if a == account_id), customer_id(account_id))
            view = {
                'account_id': account_id,
                'customer': customer,
                'payments': _newest(self._payments, account_id),
                'subscriptions': _newest(self._subscriptions, account_id),
                'sessions': _newest(self._sessions, account_id),
            }
            return copy.deepcopy(view)

    def invoice_payments(self, invoice_id: str) -> list[Record] | None:
        """The InvoicePayments of an invoice, oldest first; None for an invoice never told about."""
        with self._lock:
            found = self._invoice_payments.get(invoice_id)
            return copy.deepcopy(found) if found is not None else None

    def add_invoice_payment(self, payment: Record) -> None:
        """Know an InvoicePayment (replacing one with its id): how Stripe says which PaymentIntent paid an invoice."""
        with self._lock:
            known = self._invoice_payments.setdefault(str(payment['invoice']), [])
            known[:] = [p for p in known if p.get('id') != payment.get('id')] + [copy.deepcopy(payment)]

    # ---------------------------------------------------------------- derivations (under the lock)
    def _session(self, event_type: str, session: dict[str, Any]) -> None:
        metadata = _dict(session.get('metadata'))
        account_id = checkout_account(session)
        if account_id is None:
            return
        self._remember_customer(session.get('customer'), account_id)
        paid = session.get('payment_status') == 'paid' and event_type != 'checkout.session.async_payment_failed'
        status = 'failed' if event_type == 'checkout.session.async_payment_failed' else session.get('payment_status')
        fields = {
            'account_id': account_id,
            'mode': session.get('mode'),
            'payment_status': status,
            'pack_id': metadata.get('pack_id'),
            'plan_id': metadata.get('plan_id'),
            'amount_total': session.get('amount_total'),
            'currency': session.get('currency'),
            'payment_intent': session.get('payment_intent'),
            'subscription': session.get('subscription'),
        }
        self._upsert(self._sessions, str(session.get('id')), fields)
        subscription_id = _str(session.get('subscription'))
        if subscription_id and session.get('mode') == 'subscription':
            fields = {'account_id': account_id, 'customer': session.get('customer'), 'plan_id': metadata.get('plan_id')}
            known = self._subscriptions.get(subscription_id, {})
            self._upsert(self._subscriptions, subscription_id, fields | {'status': known.get('status', 'active')})
        intent = _str(session.get('payment_intent'))
        if intent and session.get('mode') == 'payment':
            payment = {'account_id': account_id, 'session': session.get('id'), 'pack_id': metadata.get('pack_id')}
            payment |= {'amount': session.get('amount_total'), 'currency': session.get('currency')}
            self._payment(intent, payment, paid=paid)

    def _invoice(self, event_type: str, invoice: dict[str, Any]) -> None:
        intent = self._know_invoice_payments(invoice)
        subscription_id = _invoice_subscription(invoice)
        account_id = _str(_invoice_subscription_metadata(invoice).get('account_id')) or self._customers.get(
            str(invoice.get('customer'))
        )
        if subscription_id is None or account_id is None:
            return
        self._remember_customer(invoice.get('customer'), account_id)
        line = next(iter(_list(_dict(invoice.get('lines')).get('data'))), {})
        price = _line_price(line)
        period_end = _dict(line.get('period')).get('end')
        known = self._subscriptions.get(subscription_id, {})
        fields = {'account_id': account_id, 'customer': invoice.get('customer'), 'price': price or known.get('price')}
        fields |= {'period_end': period_end, 'status': known.get('status', 'active')}
        if isinstance(period_end, int):  # the end of the last period paid: a renewal's period starts there
            fields['invoiced_until'] = max(period_end, int(known.get('invoiced_until') or 0))
        self._upsert(self._subscriptions, subscription_id, fields)
        if intent:
            payment = {'account_id': account_id, 'invoice': invoice.get('id'), 'subscription': subscription_id}
            payment |= {'amount': invoice.get('amount_paid'), 'currency': invoice.get('currency')}
            self._payment(intent, payment, paid=True)

    def _know_invoice_payments(self, invoice: dict[str, Any]) -> str | None:
        """Remember the invoice's InvoicePayments (what it carries, else what it implies); its paid PaymentIntent."""
        invoice_id = _str(invoice.get('id'))
        if invoice_id is None:
            return None
        amount = invoice.get('amount_paid') if isinstance(invoice.get('amount_paid'), int) else 0
        if isinstance(invoice.get('payments'), dict):
            self._invoice_payments[invoice_id] = _list(_dict(invoice.get('payments')).get('data'))
        elif invoice_id not in self._invoice_payments:
            carried = _str(invoice.get('payment_intent'))
            intent = carried or (invoice_intent(invoice_id) if amount else None)
            self._invoice_payments[invoice_id] = [invoice_payment(invoice_id, intent, amount)] if intent else []
        paid = [p for p in self._invoice_payments[invoice_id] if p.get('status') in ('paid', None)]
        return next((i for p in paid if (i := _str(_dict(p.get('payment')).get('payment_intent')))), None)

    def _subscription(self, event_type: str, subscription: dict[str, Any]) -> None:
        subscription_id = str(subscription.get('id'))
        known = self._subscriptions.get(subscription_id, {})
        account_id = (
            _str(_dict(subscription.get('metadata')).get('account_id'))
            or known.get('account_id')
            or self._customers.get(str(subscription.get('customer')))
        )
        if account_id is None:
            return
        item = _dict(next(iter(_dict(subscription.get('items')).get('data') or []), None))
        status = 'canceled' if event_type == 'customer.subscription.deleted' else subscription.get('status')
        fields = {'account_id': account_id, 'customer': subscription.get('customer'), 'status': status}
        fields |= {'price': _str(_dict(item.get('price')).get('id')) or known.get('price')}
        fields |= {'period_end': item.get('current_period_end') or known.get('period_end')}
        fields['cancel_at_period_end'] = bool(subscription.get('cancel_at_period_end'))
        self._upsert(self._subscriptions, subscription_id, fields)

    def _charge(self, event_type: str, charge: dict[str, Any]) -> None:
        payment = self._payments.get(str(charge.get('payment_intent')))
        if payment is not None and isinstance(charge.get('amount_refunded'), int):
            payment['amount_refunded'] = max(payment['amount_refunded'], charge['amount_refunded'])

    def _dispute(self, event_type: str, dispute: dict[str, Any]) -> None:
        payment = self._payments.get(str(dispute.get('payment_intent')))
        if payment is None:
            return
        disputes: dict[str, Record] = payment['disputes']
        found = disputes.setdefault(str(dispute.get('id')), {'id': dispute.get('id'), 'seq': next(self._order)})
        found.update(amount=dispute.get('amount'), status=dispute.get('status'))

    # ---------------------------------------------------------------- helpers
    def _payment(self, intent: str, fields: dict[str, Any], *, paid: bool) -> None:
        defaults = {'payment_intent': intent, 'charge': charge_id(intent), 'amount_refunded': 0, 'disputes': {}}
        record = self._upsert(self._payments, intent, fields, defaults)
        record['status'] = 'succeeded' if paid or record.get('status') == 'succeeded' else 'processing'

    def _upsert(
        self, table: dict[str, Record], key: str, fields: dict[str, Any], defaults: dict[str, Any] | None = None
    ) -> Record:
        record = table.setdefault(key, {'id': key, 'seq': next(self._order), **(defaults or {})})
        record.update({k: v for k, v in fields.items() if v is not None})
        return record

    def _remember_customer(self, customer: Any, account_id: str) -> None:
        if isinstance(customer, str) and customer:
            self._customers[customer] = account_id


def _newest(table: dict[str, Record], account_id: str) -> list[Record]:
    found = [r for r in table.values() if r.get('account_id') == account_id]
    found.sort(key=lambda r: r['seq'], reverse=True)
    return [_listed(r) for r in found]


def _listed(record: Record) -> Record:
    """A record as the view shows it: its disputes a list, newest first, like everything else."""
    listed = dict(record)
    if isinstance(record.get('disputes'), dict):
        listed['disputes'] = sorted(record['disputes'].values(), key=lambda d: d['seq'], reverse=True)
    return listed
