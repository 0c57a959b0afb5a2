"""The Stripe adapter: the only module that imports ``stripe`` (only the payment functions load it).

- :func:`verify_event`: ``Stripe-Signature`` checked on the raw body by the stripe library (HMAC-SHA256 of
  ``"{t}.{body}"``, any of several ``v1`` signatures, timestamps older than the tolerance refused).
- :class:`StripeCheckout`: creates Checkout Sessions through a ``StripeClient`` whose API base address comes
  from settings (``STRIPE_API_BASE``: the local fake Stripe offline, the real API when empty).
"""

from __future__ import annotations

import json
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


@cache
def _client(api_key: str, api_base: str) -> stripe.StripeClient:
    base_addresses: Any = {'api': api_base} if api_base else None
    return stripe.StripeClient(api_key, base_addresses=base_addresses, max_network_retries=2)
