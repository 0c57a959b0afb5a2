"""Standard Webhooks signatures (HMAC-SHA256), as Replicate and the mock provider send them.

Headers: ``webhook-id``, ``webhook-timestamp`` (unix seconds) and ``webhook-signature``
(space-separated ``v1,<base64 signature>`` entries) over ``{id}.{timestamp}.{body}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping

from atelier.providers.base import InvalidWebhookSignature

TOLERANCE_SECONDS = 300


def _signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    signed = f'{message_id}.{timestamp}.'.encode() + body
    return base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def sign(secret: str, body: bytes, *, message_id: str | None = None, timestamp: int | None = None) -> dict[str, str]:
    """The headers that sign ``body`` with ``secret``."""
    message_id = message_id or f'msg_{uuid.uuid4().hex}'
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        'webhook-id': message_id,
        'webhook-timestamp': ts,
        'webhook-signature': f'v1,{_signature(secret, message_id, ts, body)}',
    }


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
    """The message id if ``body`` carries a valid, fresh signature by ``secret``; raises otherwise."""
    lower = {k.lower(): v for k, v in headers.items()}
    message_id, ts, signatures = (lower.get(h, '') for h in ('webhook-id', 'webhook-timestamp', 'webhook-signature'))
    if not (message_id and ts and signatures):
        raise InvalidWebhookSignature('The webhook is not signed.')
    try:
        age = abs((time.time() if now is None else now) - int(ts))
    except ValueError:
        raise InvalidWebhookSignature('The webhook timestamp is not valid.') from None
    if age > TOLERANCE_SECONDS:
        raise InvalidWebhookSignature('The webhook timestamp is too old or too far in the future.')
    expected = _signature(secret, message_id, ts, body)
    for entry in signatures.split():
        version, _, value = entry.partition(',')
        if version == 'v1' and hmac.compare_digest(value, expected):
            return message_id
    raise InvalidWebhookSignature('The webhook signature is not valid.')
