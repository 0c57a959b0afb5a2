"""Bearer tokens: compact JWS with HMAC-SHA256, signed with a key from settings.

Only ``HS256`` is accepted. Anything else (``alg: none``, another algorithm, a token signed with
another key, an expired or malformed token) is refused with :class:`InvalidToken`. The standard
library is enough for one algorithm, so no JWT dependency is shipped in the layer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from atelier.errors import Unauthorized

ISSUER = 'atelier'
_HEADER = {'alg': 'HS256', 'typ': 'JWT'}


class InvalidToken(Unauthorized):
    code = 'invalid_token'


@dataclass(frozen=True)
class Claims:
    account_id: str
    issued_at: int
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def _sign(signing_input: bytes, key: str) -> str:
    return _b64(hmac.new(key.encode('utf-8'), signing_input, hashlib.sha256).digest())


def issue_token(account_id: str, *, key: str, ttl_seconds: int, now: float | None = None) -> str:
    """A signed token for ``account_id`` that expires ``ttl_seconds`` from ``now``."""
    issued = int(time.time() if now is None else now)
    claims = {'iss': ISSUER, 'sub': account_id, 'iat': issued, 'exp': issued + ttl_seconds}
    head = _b64(json.dumps(_HEADER, separators=(',', ':')).encode())
    body = _b64(json.dumps(claims, separators=(',', ':')).encode())
    signing_input = f'{head}.{body}'.encode('ascii')
    return f'{head}.{body}.{_sign(signing_input, key)}'


def verify_token(token: str, *, key: str, now: float | None = None) -> Claims:
    """The claims of ``token`` if it is ours, intact and unexpired; :class:`InvalidToken` otherwise."""
    parts = token.split('.')
    if len(parts) != 3 or not all(parts):
        raise InvalidToken('The bearer token is malformed.')
    head, body, signature = parts
    try:
        header: Any = json.loads(_unb64(head))
        claims: Any = json.loads(_unb64(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidToken('The bearer token is malformed.') from exc
    # Checking the algorithm before the signature is what defeats `alg: none` and key confusion.
    if not isinstance(header, dict) or header.get('alg') != 'HS256':
        raise InvalidToken('The bearer token uses an unsupported algorithm.')
    # Bytes, not str: compare_digest refuses non-ASCII strings, and a token is client input.
    if not hmac.compare_digest(signature.encode('utf-8'), _sign(f'{head}.{body}'.encode('ascii'), key).encode()):
        raise InvalidToken('The bearer token signature is not valid.')
    if not isinstance(claims, dict) or claims.get('iss') != ISSUER or not isinstance(claims.get('sub'), str):
        raise InvalidToken('The bearer token was not issued by Atelier.')
    expires_at, issued_at = claims.get('exp'), claims.get('iat')
    if not isinstance(expires_at, int) or not isinstance(issued_at, int):
        raise InvalidToken('The bearer token has no valid lifetime.')
    if (time.time() if now is None else now) >= expires_at:
        raise InvalidToken('The bearer token has expired.', code='token_expired')
    return Claims(account_id=claims['sub'], issued_at=issued_at, expires_at=expires_at)
