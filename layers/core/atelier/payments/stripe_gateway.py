"""The Stripe adapter: the only module that imports ``stripe`` (only the payment functions load it).

- :func:`verify_event`: ``Stripe-Signature`` checked on the raw body by the stripe library (HMAC-SHA256 of
  ``"{t}.{body}"``, any of several ``v1`` signatures, timestamps older than the tolerance refused).
- :class:`StripeCheckout`: creates Checkout Sessions through a ``StripeClient`` whose API base address comes
  from settings (``STRIPE_API_BASE``: the local fake Stripe offline, the real API when empty).
- :class:`StripeEventLog`: pages through the Events API (``GET /v1/events``: the last 30 days, optionally only
  the events whose webhook deliveries did not all succeed), for the backfill.
- :class:`StripeInvoicePayments`: the PaymentIntent that paid an invoice (``GET /v1/invoice_payments``), which
  webhooks do not carry: ``invoice.payments`` is includable (present only when expanded) and, since
  ``2025-03-31.basil``, ``invoice.payment_intent`` and ``charge.invoice`` are gone.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import stripe

from atelier.payments.errors import InvalidSignature, MalformedEvent, PaymentsUnavailable


def verify_event(payload: bytes, signature: str | None, *, secret: str, tolerance: int) -> dict[str, Any]:
    """The event in ``payload`` if ``signature`` proves Stripe sent it; :class:`InvalidSignature` otherwise."""
    try:
        stripe.WebhookSignature.verify_header(payload, signature, secret, tolerance)
    except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError) as exc:
        raise InvalidSignature(
            'The Stripe-Signature header does not verify for this body.', details={'reason': _reason(exc)}
        ) from exc
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise MalformedEvent('The body is not JSON.') from exc
    if (
        not isinstance(event, dict)
        or event.get('object') not in (None, 'event')
        or not isinstance(event.get('id'), str)
        or not isinstance(event.get('type'), str)
    ):
        raise MalformedEvent('The body is not a Stripe event (thin v2 events are not used).')
    return event


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, 'user_message', None) or exc)
    return text.split(':')[0][:120]


class StripeCheckout:
    """Creates Stripe Checkout Sessions (with an idempotency key per request)."""

    def __init__(self, *, api_key: str, api_base: str = '') -> None:
        self._client = _client(api_key, api_base.rstrip('/'))

    def create_session(self, params: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        try:
            session = self._client.v1.checkout.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={'idempotency_key': idempotency_key},
            )
        except stripe.StripeError as exc:
            raise PaymentsUnavailable(
                'Checkout is not available right now; try again.', code='checkout_unavailable'
            ) from exc
        return {'id': session.id, 'url': session.url}


@dataclass(frozen=True)
class EventPage:
    """One page of ``GET /v1/events`` (newest first): the events as Stripe rendered them, and whether more follow."""

    events: list[dict[str, Any]]
    has_more: bool


class StripeEventLog:
    """Lists Stripe events through a ``StripeClient`` (the same API base and key as checkout)."""

    def __init__(self, *, api_key: str, api_base: str = '') -> None:
        self._client = _client(api_key, api_base.rstrip('/'))

    def page(
        self,
        *,
        types: Sequence[str],
        since: int | None = None,
        undelivered_only: bool = True,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> EventPage:
        """One page of events of ``types``, created at or after ``since``, after the cursor ``starting_after``.

        ``undelivered_only`` asks for ``delivery_success=false``: events still pending or that failed every
        delivery attempt to some endpoint. Stripe keeps events for 30 days.
        """
        params: dict[str, Any] = {'limit': max(1, min(limit, 100)), 'types': list(types)}
        if undelivered_only:
            params['delivery_success'] = False
        if since is not None:
            params['created'] = {'gte': since}
        if starting_after:
            params['starting_after'] = starting_after
        try:
            listing = self._client.v1.events.list(params=params)  # type: ignore[arg-type]
        except stripe.StripeError as exc:
            raise PaymentsUnavailable(
                'The Stripe Events API is not available right now; try again.', code='stripe_events_unavailable'
            ) from exc
        raw = listing.last_response.data if listing.last_response is not None else listing.to_dict()
        body: dict[str, Any] = raw if isinstance(raw, dict) else {}
        events = [dict(e) for e in body.get('data') or [] if isinstance(e, dict) and isinstance(e.get('id'), str)]
        return EventPage(events=events, has_more=bool(body.get('has_more')) and bool(events))


class StripeInvoicePayments:
    """Finds the PaymentIntent of a paid invoice through a ``StripeClient`` (the same API base and key as checkout).

    https://docs.stripe.com/api/invoice-payment/list: ``GET /v1/invoice_payments?invoice=in_...`` lists the
    invoice's payments; a paid one of ``payment.type == "payment_intent"`` names the PaymentIntent that its
    charge, refunds and disputes refer to.
    """

    def __init__(self, *, api_key: str, api_base: str = '') -> None:
        self._client = _client(api_key, api_base.rstrip('/'))

    def paid_payment_intent(self, invoice_id: str) -> str | None:
        """The PaymentIntent of the invoice's paid payment; None when none was paid by a PaymentIntent (a $0
        invoice, one paid out of band). :class:`PaymentsUnavailable` when Stripe cannot tell now."""
        try:
            listing = self._client.v1.invoice_payments.list(params={'invoice': invoice_id, 'status': 'paid'})
        except stripe.StripeError as exc:
            raise PaymentsUnavailable(
                "The invoice's payment could not be read from Stripe now; try again.",
                code='stripe_invoice_payments_unavailable',
                details={'invoice': invoice_id},
            ) from exc
        for payment in (p.to_dict() for p in listing.data):
            details = payment.get('payment') or {}
            intent = details.get('payment_intent')
            if isinstance(intent, dict):  # expanded
                intent = intent.get('id')
            if payment.get('status') == 'paid' and details.get('type') == 'payment_intent' and isinstance(intent, str):
                return intent
        return None


#: Seconds per attempt, and retries: a call (and its one retry) ends well inside the webhook function's 15 s and the
#: API's 30 s, so a hung Stripe answers 503 (Stripe retries the webhook; a client retries checkout), never a timeout.
STRIPE_TIMEOUT_SECONDS = 4
STRIPE_RETRIES = 1


@cache
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    base_addresses: Any = {'api': api_base} if api_base else None
    return stripe.StripeClient(
        api_key,
        base_addresses=base_addresses,
        max_network_retries=STRIPE_RETRIES,
        http_client=stripe.HTTPXClient(timeout=STRIPE_TIMEOUT_SECONDS, allow_sync_methods=True),
    )
