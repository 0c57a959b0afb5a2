"""Payment provider events for tests: the shared builders of :mod:`infra.local.payment_events` (also used by
the fake Stripe's checkout page and ``python -m infra.local trigger``), and the API Gateway events of a
provider posting them to a webhook handler.
"""

from __future__ import annotations

import json
from typing import Any

from infra.local.payment_events import (
    DAY,
    PACK_100_PRICE,
    PACK_500_PRICE,
    PRO_PRICE,
    RC_AUTH,
    STRIPE_SECRET,
    charge,
    checkout_session,
    dispute,
    invoice,
    invoice_intent,
    rc_event,
    rc_purchase,
    stripe_event,
    stripe_headers,
    stripe_signature,
    subscription_object,
    uid,
)
from tests.utils import http_event

__all__ = [
    'DAY',
    'PACK_100_PRICE',
    'PACK_500_PRICE',
    'PRO_PRICE',
    'RC_AUTH',
    'STRIPE_SECRET',
    'charge',
    'checkout_session',
    'dispute',
    'invoice',
    'invoice_intent',
    'rc_event',
    'rc_purchase',
    'rc_request',
    'stripe_event',
    'stripe_request',
    'stripe_signature',
    'subscription_object',
    'uid',
]


def stripe_request(
    event: dict[str, Any] | str,
    *,
    secret: str = STRIPE_SECRET,
    header: str | None = None,
    base64_body: bool = False,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The API Gateway event of Stripe posting ``event`` (signed unless ``header`` is given)."""
    body = event if isinstance(event, str) else json.dumps(event)
    all_headers = stripe_headers(body, secret=secret)
    if header is not None:  # a given signature header ('' : none at all)
        all_headers.pop('stripe-signature')
        if header:
            all_headers['stripe-signature'] = header
    all_headers.update(headers or {})
    return http_event('POST', '/webhooks/stripe', body=body, headers=all_headers, base64_body=base64_body)


def rc_request(body: dict[str, Any] | str, *, authorization: str | None = f'Bearer {RC_AUTH}') -> dict[str, Any]:
    raw = body if isinstance(body, str) else json.dumps(body)
    headers = {'content-type': 'application/json'}
    if authorization is not None:
        headers['authorization'] = authorization
    return http_event('POST', '/webhooks/revenuecat', body=raw, headers=headers)
