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

The signature does not name its key, so every Ed25519 key of the set is tried. The set is kept by a
:class:`~atelier.jwks.KeySetCache` (the one OpenID Connect sign-in uses): trusted for 24 hours after a
fetch and never beyond; fetched again when no cached key verifies a signature (a rotation), at most once
per ``min_refetch_seconds``, so a flood of forged webhooks cannot turn into a flood of fetches; and
after a failed fetch, none is tried for ``min_refetch_seconds`` either. A JWKS that cannot be fetched is
:class:`~atelier.providers.base.ProviderUnavailable` (503: fal retries the webhook), not a forgery. The
keys are read with joserfc (OKP, ``crv: Ed25519``) and a signature checked by its Ed25519 algorithm.

When ``user_id`` is configured (``FalUserId``: the fal account whose requests this deployment sends), a
webhook signed for another fal user is refused like a forgery: fal signs every account's webhooks with the
same keys, so the signature alone does not say the request is ours.

The JWKS URL must be https (or http on 127.0.0.1/localhost, offline). One verification fetches the set at
most once (:data:`FETCH_TIMEOUT_SECONDS`), which with the result fetch keeps a webhook within its function's
timeout. joserfc and httpx are imported here only, on the first webhook: no other function pays for them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from atelier.jwks import KeySetCache, https_or_loopback, import_public_key
from atelier.observability import logger
from atelier.providers.base import InvalidWebhookSignature, ProviderUnavailable

if TYPE_CHECKING:
    import httpx
    from joserfc.jwk import Key

REQUEST_ID = 'x-fal-webhook-request-id'
USER_ID = 'x-fal-webhook-user-id'
TIMESTAMP = 'x-fal-webhook-timestamp'
SIGNATURE = 'x-fal-webhook-signature'
#: fal: "cache the JWKS for up to 24 hours".
JWKS_TTL_SECONDS = 24 * 3600.0
#: At most one fetch of the JWKS in this window: for signatures no cached key verifies, and after a failure.
MIN_REFETCH_SECONDS = 10.0
#: fal: the timestamp must be within five minutes of now.
TOLERANCE_SECONDS = 300
#: The JWKS fetch (seconds to connect, then per read).
FETCH_CONNECT_SECONDS, FETCH_TIMEOUT_SECONDS = 2.0, 3.0


@dataclass(frozen=True)
class SignedWebhook:
    """Who signed what, once verified."""

    request_id: str
    user_id: str
    timestamp: int


def message(request_id: str, user_id: str, timestamp: str, body: bytes) -> bytes:
    """The bytes fal signs for a webhook."""
    return '\n'.join((request_id, user_id, timestamp, hashlib.sha256(body).hexdigest())).encode()


class FalWebhookVerifier:
    """Verifies fal webhooks against the keys at ``jwks_url`` (cached, refetched as described above)."""

    def __init__(
        self,
        jwks_url: str,
        *,
        user_id: str = '',
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        jwks_ttl_seconds: float = JWKS_TTL_SECONDS,
        min_refetch_seconds: float = MIN_REFETCH_SECONDS,
        tolerance_seconds: int = TOLERANCE_SECONDS,
    ) -> None:
        if not https_or_loopback(jwks_url):
            raise ValueError(f'FalJwksUrl must be an https URL (http only on 127.0.0.1/localhost): {jwks_url!r}')
        self.jwks_url = jwks_url
        self._user_id = user_id
        self._http = http
        self._clock = clock
        self._tolerance = tolerance_seconds
        self._keys: KeySetCache[list[Key]] = KeySetCache(
            lambda expired: self._fetch(),
            ttl_seconds=jwks_ttl_seconds,
            min_refetch_seconds=min_refetch_seconds,
            backoff_error=lambda: ProviderUnavailable('The fal JWKS could not be fetched; trying again soon.'),
            clock=clock,
        )

    @property
    def fetches(self) -> int:
        """How many times the JWKS was fetched (tests and logs)."""
        return self._keys.fetches

    def verify(self, headers: Mapping[str, str], body: bytes) -> SignedWebhook:
        """The signed webhook's ids if ``body`` carries a valid, fresh signature by a key of fal's JWKS
        (for the configured fal user, when there is one)."""
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
        if not self._keys.find(lambda keys: True if _verified(keys, signature, signed) else None):
            raise InvalidWebhookSignature('The webhook signature is not valid.')
        if self._user_id and not hmac.compare_digest(user_id.encode(), self._user_id.encode()):
            raise InvalidWebhookSignature('The webhook is for another fal account.')
        return SignedWebhook(request_id, user_id, timestamp)

    # ------------------------------------------------------------------ the key set
    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=httpx.Timeout(FETCH_TIMEOUT_SECONDS, connect=FETCH_CONNECT_SECONDS))
        return self._http

    def _fetch(self) -> list[Key]:
        import httpx

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
        keys: list[Key] = []
        for jwk in entries if isinstance(entries, list) else []:
            if not isinstance(jwk, dict) or jwk.get('kty') != 'OKP' or jwk.get('crv') != 'Ed25519':
                continue
            key = import_public_key(jwk)
            if key is None:
                logger.warning('fal: a JWKS key is malformed; skipped', extra={'kid': jwk.get('kid')})
            else:
                keys.append(key)
        if not keys:
            raise ProviderUnavailable('The fal JWKS holds no Ed25519 key.')
        logger.info('fal: JWKS fetched', extra={'keys': len(keys)})
        return keys


def _verified(keys: list[Key], signature: bytes, signed: bytes) -> bool:
    from joserfc.jws import JWSRegistry

    ed25519 = JWSRegistry.algorithms['Ed25519']
    return any(ed25519.verify(signed, signature, key) for key in keys)
