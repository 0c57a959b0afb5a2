"""Payment provider events as Stripe and RevenueCat send them: built, signed and posted to a webhook.

One set of builders for everything local that plays a payment provider: the fake Stripe's checkout page
(:mod:`infra.local.fake_stripe`), ``python -m infra.local trigger`` (:mod:`infra.local.triggers`) and the
tests (``tests/support_payments.py`` re-exports them). The shapes follow the pinned API versions' payloads
(Stripe ``basil`` and later for invoices and subscriptions, with the legacy fields where noted), reduced to
the fields Atelier reads. Signed with the offline stack's documented local secrets (README).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from infra.local.stack import LOCAL_SECRETS

STRIPE_SECRET = LOCAL_SECRETS['stripe-webhook-secret']
RC_AUTH = LOCAL_SECRETS['revenuecat-webhook-auth']
STRIPE_API_VERSION = '2026-10-28.endive'
PACK_100_PRICE = 'price_atelier_pack_100'
PACK_500_PRICE = 'price_atelier_pack_500'
PRO_PRICE = 'price_atelier_pro_monthly'
DAY = 24 * 3600

_ids = itertools.count(1)


def uid(prefix: str) -> str:
    return f'{prefix}_{uuid.uuid4().hex[:16]}'


def customer_id(account_id: str) -> str:
    """The Stripe customer of an account offline: one per account, the same every time."""
    return f'cus_{hashlib.sha256(account_id.encode()).hexdigest()[:14]}'


def charge_id(payment_intent: str) -> str:
    """The charge of a PaymentIntent offline (each local payment succeeds with its first charge)."""
    return f'ch_{payment_intent.removeprefix("pi_")}'


def invoice_intent(invoice_id: str) -> str:
    """The PaymentIntent that pays an invoice offline (``in_X`` -> ``pi_X``): what the fake Stripe's
    ``GET /v1/invoice_payments`` answers for an invoice with money paid that it was told about."""
    return f'pi_{invoice_id.removeprefix("in_")}'


# ---------------------------------------------------------------- Stripe signatures and events


def stripe_signature(
    payload: str | bytes, *, secret: str = STRIPE_SECRET, timestamp: int | None = None, scheme: str = 'v1'
) -> str:
    """``Stripe-Signature`` as Stripe computes it: HMAC-SHA256 of ``"{t}.{payload}"`` keyed with the secret."""
    t = int(time.time()) if timestamp is None else timestamp
    body = payload.decode() if isinstance(payload, bytes) else payload
    signature = hmac.new(secret.encode(), f'{t}.{body}'.encode(), hashlib.sha256).hexdigest()
    return f't={t},{scheme}={signature}'


def stripe_event(
    event_type: str,
    obj: dict[str, Any],
    *,
    livemode: bool = False,
    created: int | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """A Stripe event (snapshot payload) about ``obj``; ``created`` defaults to now plus a per-process counter."""
    return {
        'id': event_id or uid('evt'),
        'object': 'event',
        'api_version': STRIPE_API_VERSION,
        'created': int(time.time()) + next(_ids) if created is None else created,
        'livemode': livemode,
        'pending_webhooks': 1,
        'type': event_type,
        'data': {'object': obj},
    }


# ---------------------------------------------------------------- Stripe objects


def checkout_session(
    account_id: str,
    *,
    pack_id: str | None = 'pack_100',
    plan_id: str | None = None,
    payment_status: str = 'paid',
    session_id: str | None = None,
    payment_intent: str | None = None,
    amount_total: int = 499,
    customer: str | None = None,
    subscription: str | None = None,
) -> dict[str, Any]:
    mode = 'subscription' if plan_id else 'payment'
    metadata = {'account_id': account_id, **({'plan_id': plan_id} if plan_id else {'pack_id': pack_id})}
    return {
        'id': session_id or uid('cs_test'),
        'object': 'checkout.session',
        'mode': mode,
        'status': 'complete',
        'payment_status': payment_status,
        'client_reference_id': account_id,
        'metadata': metadata,
        'customer': customer,
        'payment_intent': (payment_intent or uid('pi')) if mode == 'payment' else None,
        'subscription': subscription if mode == 'subscription' else None,
        'amount_total': amount_total,
        'currency': 'usd',
        'livemode': False,
    }


def invoice(
    account_id: str | None,
    *,
    subscription: str,
    invoice_id: str | None = None,
    billing_reason: str = 'subscription_create',
    amount_paid: int = 999,
    price: str = PRO_PRICE,
    period_start: int | None = None,
    period_end: int | None = None,
    payment_intent: str | None = None,
    customer: str = 'cus_test',
    lines: list[dict[str, Any]] | None = None,
    legacy: bool = False,
    expanded: bool = False,
) -> dict[str, Any]:
    """A paid invoice as an ``invoice.*`` webhook carries it.

    Like a real webhook it does not say which PaymentIntent paid it: ``payments`` is an includable property,
    present only when a request expands it (https://docs.stripe.com/api/invoices/object#invoice_object-payments),
    so the backend asks ``GET /v1/invoice_payments``; offline the PaymentIntent of a paid invoice is
    :func:`invoice_intent` of its id. ``expanded`` adds ``payments`` (as ``expand[]=payments`` would; then
    ``payment_intent`` may be any id); ``legacy`` uses the pre-basil shape (``subscription``,
    ``payment_intent``, ``price``).
    """
    start = int(time.time()) - 60 if period_start is None else period_start
    end = start + 30 * DAY if period_end is None else period_end
    metadata = {'account_id': account_id} if account_id else {}
    line = {'id': uid('il'), 'amount': amount_paid, 'period': {'start': start, 'end': end}}
    invoice_id = invoice_id or uid('in')
    intent = payment_intent or (invoice_intent(invoice_id) if amount_paid else None)
    if payment_intent and not (legacy or expanded) and payment_intent != invoice_intent(invoice_id):
        raise ValueError(
            f'a webhook invoice does not carry its PaymentIntent: offline {invoice_id} is paid by '
            f'{invoice_intent(invoice_id)} (pass expanded=True or legacy=True to name another)'
        )
    body: dict[str, Any] = {
        'id': invoice_id,
        'object': 'invoice',
        'status': 'paid',
        'billing_reason': billing_reason,
        'amount_paid': amount_paid,
        'currency': 'usd',
        'customer': customer,
        'livemode': False,
    }
    if legacy:
        line['price'] = {'id': price, 'object': 'price'}
        body.update(subscription=subscription, subscription_details={'metadata': metadata}, payment_intent=intent)
    else:
        line['pricing'] = {'type': 'price_details', 'price_details': {'price': price}}
        body['parent'] = {
            'type': 'subscription_details',
            'subscription_details': {'subscription': subscription, 'metadata': metadata},
        }
        if expanded:
            paid = [invoice_payment(invoice_id, intent, amount_paid)] if intent else []
            body['payments'] = {'object': 'list', 'data': paid, 'has_more': False, 'url': '/v1/invoice_payments'}
    body['lines'] = {'object': 'list', 'data': lines if lines is not None else [line]}
    return body


def invoice_payment(invoice_id: str, payment_intent: str, amount: int, *, status: str = 'paid') -> dict[str, Any]:
    """An InvoicePayment (https://docs.stripe.com/api/invoice-payment/object): the invoice paid by a PaymentIntent."""
    return {
        'id': f'inpay_{invoice_id.removeprefix("in_")}',
        'object': 'invoice_payment',
        'amount_paid': amount if status == 'paid' else None,
        'amount_requested': amount,
        'currency': 'usd',
        'invoice': invoice_id,
        'is_default': True,
        'livemode': False,
        'payment': {'type': 'payment_intent', 'payment_intent': payment_intent},
        'status': status,
    }


def subscription_object(
    account_id: str | None,
    *,
    subscription_id: str,
    status: str = 'active',
    price: str = PRO_PRICE,
    period_end: int | None = None,
    cancel_at_period_end: bool = False,
    customer: str = 'cus_test',
) -> dict[str, Any]:
    end = int(time.time()) + 30 * DAY if period_end is None else period_end
    return {
        'id': subscription_id,
        'object': 'subscription',
        'status': status,
        'customer': customer,
        'cancel_at_period_end': cancel_at_period_end,
        'metadata': {'account_id': account_id} if account_id else {},
        'items': {
            'object': 'list',
            'data': [{'id': uid('si'), 'price': {'id': price, 'object': 'price'}, 'current_period_end': end}],
        },
        'livemode': False,
    }


def charge(
    *, payment_intent: str | None, amount: int, amount_refunded: int, charge_id: str | None = None
) -> dict[str, Any]:
    return {
        'id': charge_id or uid('ch'),
        'object': 'charge',
        'amount': amount,
        'amount_refunded': amount_refunded,
        'refunded': amount_refunded >= amount,
        'payment_intent': payment_intent,
        'currency': 'usd',
        'livemode': False,
    }


def dispute(
    *, payment_intent: str, amount: int, status: str, dispute_id: str, charge_id: str = 'ch_x'
) -> dict[str, Any]:
    return {
        'id': dispute_id,
        'object': 'dispute',
        'amount': amount,
        'status': status,
        'reason': 'fraudulent',
        'charge': charge_id,
        'payment_intent': payment_intent,
        'currency': 'usd',
        'livemode': False,
    }


# ---------------------------------------------------------------- RevenueCat


def rc_event(event_type: str, app_user_id: str | None, **fields: Any) -> dict[str, Any]:
    """A RevenueCat webhook body (``{"api_version": "1.0", "event": {...}}``), in the sandbox."""
    now_ms = int(time.time() * 1000)
    event: dict[str, Any] = {
        'id': uid('rcevt').upper(),
        'type': event_type,
        'app_id': 'app1234',
        'event_timestamp_ms': now_ms + next(_ids),
        'app_user_id': app_user_id,
        'original_app_user_id': app_user_id,
        'aliases': [app_user_id] if app_user_id else [],
        'environment': 'SANDBOX',
        'store': 'APP_STORE',
        'period_type': 'NORMAL',
        'purchased_at_ms': now_ms,
        'currency': 'USD',
    }
    event.update(fields)
    if event_type == 'TRANSFER':
        event.pop('app_user_id', None)
    return {'api_version': '1.0', 'event': event}


def rc_purchase(
    event_type: str, app_user_id: str, product_id: str, transaction_id: str, **fields: Any
) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    subscription = product_id.startswith('pro_monthly')
    defaults: dict[str, Any] = {
        'product_id': product_id,
        'transaction_id': transaction_id,
        'original_transaction_id': fields.pop('original_transaction_id', transaction_id),
        'price': 9.99 if subscription else 4.99,
        'price_in_purchased_currency': 9.99 if subscription else 4.99,
        'expiration_at_ms': now_ms + 30 * DAY * 1000 if subscription else None,
    }
    return rc_event(event_type, app_user_id, **{**defaults, **fields})


# ---------------------------------------------------------------- delivery


@dataclass(frozen=True)
class Delivery:
    """What a webhook endpoint answered."""

    status: int
    body: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def stripe_headers(body: str, *, secret: str = STRIPE_SECRET) -> dict[str, str]:
    """The headers Stripe sends with ``body``, signed now."""
    return {
        'content-type': 'application/json; charset=utf-8',
        'user-agent': 'Stripe/1.0 (+https://stripe.com/docs/webhooks)',
        'stripe-signature': stripe_signature(body, secret=secret),
    }


def revenuecat_headers(*, authorization: str = f'Bearer {RC_AUTH}') -> dict[str, str]:
    """The headers RevenueCat sends: the configured ``Authorization`` value."""
    return {'content-type': 'application/json', 'authorization': authorization}


def send_stripe_event(webhook_url: str, event: dict[str, Any], *, secret: str = STRIPE_SECRET) -> Delivery:
    """POST ``event`` to a Stripe webhook endpoint as Stripe does (a fresh signature on each delivery)."""
    body = json.dumps(event)
    return _post(webhook_url, body, stripe_headers(body, secret=secret))


def send_revenuecat_event(
    webhook_url: str, body: dict[str, Any], *, authorization: str = f'Bearer {RC_AUTH}'
) -> Delivery:
    """POST a RevenueCat webhook body with the configured ``Authorization`` header."""
    return _post(webhook_url, json.dumps(body), revenuecat_headers(authorization=authorization))


def _post(url: str, body: str, headers: dict[str, str]) -> Delivery:
    try:
        response = httpx.post(url, content=body.encode(), headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        return Delivery(status=0, body=f'no answer: {exc}')
    return Delivery(status=response.status_code, body=response.text)
