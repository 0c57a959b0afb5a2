"""Loading the vendor samples (``fixtures/``) and the few adaptations the contract tests allow themselves."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / 'fixtures'

_RC_TIMES = ('event_timestamp_ms', 'purchased_at_ms', 'expiration_at_ms', 'grace_period_expiration_at_ms')


def sample(path: str) -> dict[str, Any]:
    """A fixture as published (a fresh copy)."""
    return copy.deepcopy(json.loads((FIXTURES / path).read_text()))


def revenuecat(
    name: str,
    *,
    event_id: str | None = None,
    app_user_id: str | None = None,
    alias: tuple[str, str] | None = None,
    product_id: str | None = None,
    at_ms: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A RevenueCat sample with ids mapped to ours and, with ``at_ms``, its timestamps moved as one block."""
    body = sample(f'revenuecat/{name}.json')
    event = body['event']
    event['id'] = event_id or f'{event["id"]}-{name}'
    if app_user_id is not None:
        event['app_user_id'] = app_user_id
    if alias is not None:
        old, new = alias
        event['aliases'] = [new if a == old else a for a in event['aliases']]
    if product_id is not None:
        event['product_id'] = product_id
    if at_ms is not None:
        shift = at_ms - event['event_timestamp_ms']
        for key in _RC_TIMES:
            if isinstance(event.get(key), int):
                event[key] += shift
    event.update(fields)
    return body


def stripe_event(event_type: str, obj: dict[str, Any], *, event_id: str) -> dict[str, Any]:
    """Stripe's example ``event`` envelope carrying ``obj`` as a snapshot event of ``event_type``."""
    envelope = sample('stripe/event.json')
    envelope.update(id=event_id, type=event_type, data={'object': obj})
    return envelope
