"""Standard Webhooks signatures (HMAC-SHA256), as Replicate and the mock provider send them.

The signed content is ``{webhook-id}.{webhook-timestamp}.{raw body}``. A ``whsec_<base64>`` secret
(Replicate's, from ``GET /v1/webhooks/default/secret``) signs with its base64-decoded key; any other
secret (the mock provider's) with its bytes. ``webhook-signature`` holds one or more space-separated
``v1,<base64 signature>`` entries (several while a secret is being rotated). ``webhook-id`` stays the
same across retries of one delivery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping

from atelier.providers.base import InvalidWebhookSignature

#: How far a webhook's timestamp may be from now (replays older than this are refused).
TOLERANCE_SECONDS = 300
SECRET_PREFIX = 'whsec_'


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (a secret without the prefix is used as it is)."""
    if not secret.startswith(SECRET_PREFIX):
        return secret.encode()
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError('The Replicate webhook secret is not whsec_ followed by base64.') from None


def signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    signed = f'{message_id}.{timestamp}.'.encode() + body
    return base64.b64encode(hmac.new(secret_key(secret), signed, hashlib.sha256).digest()).decode()


def sign(secret: str, body: bytes, *, message_id: str | None = None, timestamp: int | None = None) -> dict[str, str]:
    """The headers that sign ``body`` with ``secret`` (the mock provider sends these; fakes and tests too)."""
    message_id = message_id or f'msg_{uuid.uuid4().hex}'
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        'webhook-id': message_id,
        'webhook-timestamp': ts,
        'webhook-signature': f'v1,{signature(secret, message_id, ts, body)}',
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """The ``webhook-id`` if ``body`` carries a valid, fresh signature by ``secret``; raises otherwise."""
    lower = {k.lower(): v for k, v in headers.items()}
    message_id, ts, signatures = (lower.get(h, '') for h in ('webhook-id', 'webhook-timestamp', 'webhook-signature'))
    if not (message_id and ts and signatures):
        raise InvalidWebhookSignature('The webhook is not signed.')
    try:
        age = abs((time.time() if now is None else now) - int(ts))
    except ValueError:
        raise InvalidWebhookSignature('The webhook timestamp is not valid.') from None
    if age > tolerance:
        raise InvalidWebhookSignature('The webhook timestamp is too old or too far in the future.')
    expected = signature(secret, message_id, ts, body)
    for entry in signatures.split():
        version, _, value = entry.partition(',')
        if version == 'v1' and hmac.compare_digest(value.encode(), expected.encode()):
            return message_id
    raise InvalidWebhookSignature('The webhook signature is not valid.')
