"""What the permanent record of a provider event keeps: ids and money, never a person's details.

A provider event's raw body (emails, names, billing addresses, store subscriber attributes) is kept only for
the raw-event retention (``RawEventRetentionDays``); its record is kept forever. These functions pick from a
verified event what the record keeps: when it happened, its mode, the provider's object ids the business ids
derive from (``stripe:checkout:{checkout_session}``, ``stripe:invoice:{invoice}``, ``rc:txn:{transaction}`` ...)
and the amount it states, in the currency's minor unit:

- Stripe: a Checkout Session's ``amount_total``, an invoice's ``amount_paid``, a refunded charge's cumulative
  ``amount_refunded`` (another charge event: its ``amount``), a dispute's ``amount``; a subscription states none.
- RevenueCat: ``price`` (RevenueCat reports it in USD, negative on a refund) in US cents, as the ledger books it.

Only ids are read from nested objects (an expanded Stripe ``customer`` contributes its id, never its email).
The functions are pure and never raise on an odd payload: what is missing or malformed is left out.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from atelier.payments.store import EventSummary
from atelier.payments.stripe_events import _id, _invoice_subscription, invoice_payment_intent

#: Provider ids are short tokens (``cs_test_a1...``, ``pi_3N...``, App Store transaction numbers, product ids).
_TOKEN = re.compile(r'[A-Za-z0-9_.:\-]{1,255}')
_STRIPE_OBJECT = re.compile(r'[a-z_.]{1,40}')
#: The Stripe object ids an event's object refers to, under the name the record keeps them by.
_STRIPE_REFS = ('payment_intent', 'invoice', 'subscription', 'charge', 'customer')
_STRIPE_AMOUNT = {'checkout.session': 'amount_total', 'invoice': 'amount_paid', 'charge': 'amount', 'dispute': 'amount'}
_RC_REFS = {
    'transaction': 'transaction_id',
    'original_transaction': 'original_transaction_id',
    'product': 'product_id',
    'new_product': 'new_product_id',
    'store': 'store',
}


def summarize_event(provider: str, event: dict[str, Any]) -> EventSummary:
    """The record's summary of a verified ``event`` (a Stripe event, or a RevenueCat webhook body)."""
    if provider == 'stripe':
        return stripe_summary(event)
    if provider == 'revenuecat':
        return revenuecat_summary(event)
    return EventSummary()


def stripe_summary(event: dict[str, Any]) -> EventSummary:
    obj = _dict(_dict(event.get('data')).get('object'))
    kind = obj.get('object')
    refs: dict[str, str] = {}
    if isinstance(kind, str) and _STRIPE_OBJECT.fullmatch(kind):
        _add(refs, kind.replace('.', '_'), obj.get('id'))
    if kind == 'invoice':
        _add(refs, 'subscription', _invoice_subscription(obj))
        _add(refs, 'payment_intent', invoice_payment_intent(obj))
    for name in _STRIPE_REFS:
        _add(refs, name, _id(obj.get(name)))
    field = 'amount_refunded' if event.get('type') == 'charge.refunded' else _STRIPE_AMOUNT.get(str(kind))
    amount = _whole(obj.get(field)) if field else None
    created = _whole(event.get('created'))
    livemode = event.get('livemode')
    return EventSummary(
        occurred_at=_iso(created) if created is not None else None,
        live=livemode if isinstance(livemode, bool) else None,
        refs=refs,
        amount=amount,
        currency=_currency(obj.get('currency')) if amount is not None else None,
    )


def revenuecat_summary(body: dict[str, Any]) -> EventSummary:
    event = _dict(body.get('event'))
    refs: dict[str, str] = {}
    for name, field in _RC_REFS.items():
        _add(refs, name, event.get(field))
    at_ms = _whole(event.get('event_timestamp_ms'))
    environment = event.get('environment')
    price = event.get('price')
    cents = None
    if isinstance(price, int | float) and not isinstance(price, bool) and math.isfinite(price) and abs(price) < 1e7:
        cents = round(price * 100)
    return EventSummary(
        occurred_at=_iso(at_ms / 1000) if at_ms is not None else None,
        live=environment == 'PRODUCTION' if isinstance(environment, str) else None,
        refs=refs,
        amount=cents,
        currency='usd' if cents is not None else None,
    )


def _add(refs: dict[str, str], name: str, value: Any) -> None:
    if name not in refs and isinstance(value, str) and _TOKEN.fullmatch(value):
        refs[name] = value


def _iso(epoch_seconds: float) -> str | None:
    try:
        return datetime.fromtimestamp(epoch_seconds, UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    except (OverflowError, OSError, ValueError):
        return None


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 10**15 else None


def _currency(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and re.fullmatch(r'[A-Za-z]{3}', value) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
