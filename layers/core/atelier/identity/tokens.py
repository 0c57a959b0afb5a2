"""Access tokens: compact JWS (HS256) with a key id, short-lived, bound to a session.

The signing keys are a *keyring*: the secret ``auth-token-secret`` holds one or more comma-separated keys;
the first signs, every one verifies. Each key's ``kid`` is derived from the key itself
(``k`` + 12 hex digits of its SHA-256), so rotating is: put ``NEW,OLD``, wait one access-token lifetime,
put ``NEW``. Tokens name their ``kid``; a token whose ``kid`` is not on the ring is refused.

Only ``HS256`` is accepted. Anything else (``alg: none``, another algorithm, a token signed with another
key, an expired or malformed token, a token without a session) is refused with :class:`InvalidToken`.
Access tokens are only ever verified by Atelier itself, so a symmetric key is enough; the standard
library does it, so no JWT dependency is needed on this hot path.
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
#: The documented secret of the offline stack: refused on every other stage.
LOCAL_TOKEN_SECRET = 'atelier-local-token-secret'
#: Shortest key accepted outside the local stage (256 bits of base64 / hex text are 43 / 64 characters).
MIN_SECRET_LENGTH = 32
LOCAL_STAGE = 'local'


class InvalidToken(Unauthorized):
    code = 'invalid_token'


class InsecureTokenSecret(RuntimeError):
    """The token secret is missing, too short or the documented local one on a deployed stage."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes


@dataclass(frozen=True)
class Keyring:
    """The access-token keys: ``keys[0]`` signs, every key verifies."""

    keys: tuple[SigningKey, ...]

    @classmethod
    def parse(cls, value: str, *, stage: str) -> Keyring:
        """The ring in ``value`` (comma-separated keys, the signing key first).

        Raises
        ------
        InsecureTokenSecret
            Outside the local stage: no key, a key shorter than ``MIN_SECRET_LENGTH``, or the local secret.
        """
        secrets = [part.strip() for part in value.split(',') if part.strip()]
        if stage != LOCAL_STAGE:
            if not secrets:
                raise InsecureTokenSecret('auth-token-secret is empty')
            for secret in secrets:
                if secret == LOCAL_TOKEN_SECRET:
                    raise InsecureTokenSecret('auth-token-secret is the documented local secret')
                if len(secret) < MIN_SECRET_LENGTH:
                    raise InsecureTokenSecret(f'auth-token-secret keys need at least {MIN_SECRET_LENGTH} characters')
        if not secrets:
            secrets = [LOCAL_TOKEN_SECRET]
        return cls(tuple(SigningKey(kid=key_id(secret), secret=secret.encode('utf-8')) for secret in secrets))

    @property
    def signing(self) -> SigningKey:
        return self.keys[0]

    def find(self, kid: object) -> SigningKey | None:
        return next((key for key in self.keys if key.kid == kid), None)


def key_id(secret: str) -> str:
    return 'k' + hashlib.sha256(secret.encode('utf-8')).hexdigest()[:12]


@dataclass(frozen=True)
class Claims:
    account_id: str
    session_id: str
    issued_at: int
    expires_at: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


def _sign(signing_input: bytes, key: bytes) -> str:
    return _b64(hmac.new(key, signing_input, hashlib.sha256).digest())


def issue_token(
    account_id: str, session_id: str, *, keyring: Keyring, ttl_seconds: int, now: float | None = None
) -> str:
    """A signed access token for the session ``session_id`` of ``account_id``, valid ``ttl_seconds``."""
    issued = int(time.time() if now is None else now)
    key = keyring.signing
    header = {'alg': 'HS256', 'typ': 'JWT', 'kid': key.kid}
    claims = {'iss': ISSUER, 'sub': account_id, 'sid': session_id, 'iat': issued, 'exp': issued + ttl_seconds}
    head = _b64(json.dumps(header, separators=(',', ':')).encode())
    body = _b64(json.dumps(claims, separators=(',', ':')).encode())
    signing_input = f'{head}.{body}'.encode('ascii')
    return f'{head}.{body}.{_sign(signing_input, key.secret)}'


def verify_token(token: str, *, keyring: Keyring, now: float | None = None) -> Claims:
    """The claims of ``token`` if it is ours, intact and unexpired; :class:`InvalidToken` otherwise.

    (Whether its session is still open is the session store's question: see ``atelier.api.auth``.)
    """
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
    key = keyring.find(header.get('kid'))
    if key is None:
        raise InvalidToken('The bearer token was signed with a key that is not (or no longer) ours.')
    # Bytes, not str: compare_digest refuses non-ASCII strings, and a token is client input.
    if not hmac.compare_digest(signature.encode('utf-8'), _sign(f'{head}.{body}'.encode('ascii'), key.secret).encode()):
        raise InvalidToken('The bearer token signature is not valid.')
    if not isinstance(claims, dict) or claims.get('iss') != ISSUER or not isinstance(claims.get('sub'), str):
        raise InvalidToken('The bearer token was not issued by Atelier.')
    if not isinstance(claims.get('sid'), str) or not claims['sid']:
        raise InvalidToken('The bearer token belongs to no session; sign in again.')
    expires_at, issued_at = claims.get('exp'), claims.get('iat')
    if not isinstance(expires_at, int) or not isinstance(issued_at, int):
        raise InvalidToken('The bearer token has no valid lifetime.')
    if (time.time() if now is None else now) >= expires_at:
        raise InvalidToken('The bearer token has expired.', code='token_expired')
    return Claims(account_id=claims['sub'], session_id=claims['sid'], issued_at=issued_at, expires_at=expires_at)
