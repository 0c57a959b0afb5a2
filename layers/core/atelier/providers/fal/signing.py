"""fal.ai webhook signatures: ED25519 by a key of fal's JWKS, never a shared secret.

What fal documents ("Verifying Your Webhook", https://docs.fal.ai/model-apis/model-endpoints/webhooks;
the same scheme in public verifiers, e.g. the reference doc's C1):

- four headers: ``X-Fal-Webhook-Request-Id``, ``X-Fal-Webhook-User-Id``, ``X-Fal-Webhook-Timestamp``
  (Unix seconds) and ``X-Fal-Webhook-Signature`` (the ED25519 signature, hex);
- the signed message is ``{request_id}\\n{user_id}\\n{timestamp}\\n{sha256 hex of the raw body}`` (UTF-8);
- the public keys are a JWKS, ``https://rest.alpha.fal.ai/.well-known/jwks.json``:
  ``{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "<base64url public key>", "kid": ...}]}``,
  which may be cached up to 24 hours;
- a timestamp more than five minutes from now is refused (a replay).

The signature does not name its key, so every Ed25519 key of the set is tried. A signature no cached
key verifies may come from a key fal published since (a rotation): the set is then fetched again, once
for that webhook and at most once per ``min_refetch_seconds`` per execution environment (a flood of
forged webhooks cannot turn into a flood of fetches), and the keys it adds are tried. A JWKS that
cannot be fetched is :class:`~atelier.providers.base.ProviderUnavailable` (503: fal retries the
webhook), not a forgery.

``cryptography`` and ``httpx`` are imported here only, on the first webhook: no other function pays for them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from atelier.observability import logger
from atelier.providers.base import InvalidWebhookSignature, ProviderUnavailable

if TYPE_CHECKING:
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

REQUEST_ID = 'x-fal-webhook-request-id'
USER_ID = 'x-fal-webhook-user-id'
TIMESTAMP = 'x-fal-webhook-timestamp'
SIGNATURE = 'x-fal-webhook-signature'
#: fal: "cache the JWKS for up to 24 hours".
JWKS_TTL_SECONDS = 24 * 3600.0
#: At most one fetch of the JWKS in this window for signatures no cached key verifies.
MIN_REFETCH_SECONDS = 10.0
#: fal: the timestamp must be within five minutes of now.
TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class SignedWebhook:
    """Who signed what, once verified."""

    request_id: str
    user_id: str
    timestamp: int


def message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes fal signs for a webhook."""
    return '\n'.join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + '=' * (-len(text) % 4))


class FalWebhookVerifier:
    """Verifies fal webhooks against the keys at ``jwks_url`` (cached, refetched as described above)."""

    def __init__(
        self,
        jwks_url: str,
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        jwks_ttl_seconds: float = JWKS_TTL_SECONDS,
        min_refetch_seconds: float = MIN_REFETCH_SECONDS,
        tolerance_seconds: int = TOLERANCE_SECONDS,
    ) -> None:
        self.jwks_url = jwks_url
        self._http = http
        self._clock = clock
        self._ttl = jwks_ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._tolerance = tolerance_seconds
        self._keys: dict[bytes, Ed25519PublicKey] = {}  # by raw public key
        self._fetched_at: float | None = None
        self._lock = threading.Lock()
        #: How many times the JWKS was fetched (tests and logs).
        self.fetches = 0

    def verify(self, headers: Mapping[str, str], body: bytes) -> SignedWebhook:
        """The signed webhook's ids if ``body`` carries a valid, fresh signature by a key of fal's JWKS."""
        lower = {k.lower(): v for k, v in headers.items()}
        request_id, user_id, ts, signature_hex = (
            lower.get(h, '').strip() for h in (REQUEST_ID, USER_ID, TIMESTAMP, SIGNATURE)
        )
        if not (request_id and user_id and ts and signature_hex):
            raise InvalidWebhookSignature('The webhook is not signed.')
        try:
            timestamp = int(ts)
            signature = bytes.fromhex(signature_hex)
        except ValueError:
            raise InvalidWebhookSignature('The webhook signature headers are malformed.') from None
        if abs(self._clock() - timestamp) > self._tolerance:
            raise InvalidWebhookSignature('The webhook timestamp is too old or too far in the future.')
        signed = message(request_id, user_id, ts, body)
        tried = self._current_keys()
        if _verified(tried.values(), signature, signed):
            return SignedWebhook(request_id, user_id, timestamp)
        fresh = self._refetch()
        if fresh is not None and _verified((k for raw, k in fresh.items() if raw not in tried), signature, signed):
            return SignedWebhook(request_id, user_id, timestamp)
        raise InvalidWebhookSignature('The webhook signature is not valid.')

    # ------------------------------------------------------------------ the key set
    def _current_keys(self) -> dict[bytes, Ed25519PublicKey]:
        with self._lock:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self._ttl:
                self._load(now, keep_on_failure=self._fetched_at is not None)
            return dict(self._keys)

    def _refetch(self) -> dict[bytes, Ed25519PublicKey] | None:
        """The key set fetched again, unless it was fetched less than ``min_refetch_seconds`` ago (None)."""
        with self._lock:
            now = self._clock()
            if self._fetched_at is not None and now - self._fetched_at < self._min_refetch:
                return None
            self._load(now, keep_on_failure=True)
            return dict(self._keys)

    def _load(self, now: float, *, keep_on_failure: bool) -> None:
        try:
            keys = self._fetch()
        except ProviderUnavailable:
            if keep_on_failure and self._keys:
                logger.warning('fal: the JWKS could not be fetched; keeping the cached keys')
                self._fetched_at = now  # not again before min_refetch / ttl
                return
            raise
        self._keys, self._fetched_at = keys, now

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=httpx.Timeout(5.0, connect=3.0))
        return self._http

    def _fetch(self) -> dict[bytes, Ed25519PublicKey]:
        import httpx
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self.fetches += 1
        try:
            response = self.http.get(self.jwks_url)
        except httpx.HTTPError as exc:
            raise ProviderUnavailable(f'The fal JWKS is unreachable: {exc}') from exc
        if response.status_code != 200:
            raise ProviderUnavailable(f'The fal JWKS answered {response.status_code}.')
        try:
            document: Any = response.json()
        except ValueError:
            raise ProviderUnavailable('The fal JWKS is not JSON.') from None
        entries = document.get('keys') if isinstance(document, dict) else None
        keys: dict[bytes, Ed25519PublicKey] = {}
        for jwk in entries if isinstance(entries, list) else []:
            if not isinstance(jwk, dict) or jwk.get('kty') != 'OKP' or jwk.get('crv') != 'Ed25519':
                continue
            try:
                raw = _b64url(str(jwk['x']))
                keys[raw] = Ed25519PublicKey.from_public_bytes(raw)
            except (KeyError, ValueError, binascii.Error):
                logger.warning('fal: a JWKS key is malformed; skipped', extra={'kid': jwk.get('kid')})
        if not keys:
            raise ProviderUnavailable('The fal JWKS holds no Ed25519 key.')
        logger.info('fal: JWKS fetched', extra={'keys': len(keys)})
        return keys


def _verified(keys: Any, signature: bytes, signed: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature

    for key in keys:
        try:
            key.verify(signature, signed)
        except InvalidSignature:
            continue
        return True
    return False
