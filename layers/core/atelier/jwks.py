"""Published key sets (JWKS), shared by the verifiers that check signatures with someone's public keys:
OpenID Connect ID tokens (:mod:`atelier.identity.oidc`) and fal.ai webhooks (:mod:`atelier.providers.fal.signing`).

:class:`KeySetCache` keeps one key set per process, with the rules both need:

- the set is trusted for ``ttl_seconds`` after a successful fetch, then fetched again (never used stale:
  a fetch that fails leaves the caller unable to verify, which it answers as "try again later");
- when no cached key fits (an unknown ``kid``, a signature no key verifies: perhaps a rotation), the set
  is fetched again, at most once per ``min_refetch_seconds``, so a flood of forgeries cannot turn into a
  flood of fetches;
- after a failed fetch, no other is tried for ``min_refetch_seconds`` (a backoff): callers fail fast.

:func:`import_public_key` reads one JWK with joserfc (RSA, EC, OKP; never a symmetric key). joserfc is
imported on first use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from joserfc.jwk import Key

K = TypeVar('K')
R = TypeVar('R')

LOOPBACK_HOSTS = frozenset({'127.0.0.1', 'localhost', '::1'})


def is_loopback_http(url: str) -> bool:
    """An ``http`` URL on this machine (the offline stack's fakes)."""
    parts = urlsplit(url)
    return parts.scheme == 'http' and parts.hostname in LOOPBACK_HOSTS


def https_or_loopback(url: str, *, allow_loopback: bool = True) -> bool:
    """Whether ``url`` may serve keys: https with a host, or (when allowed) http on the loopback interface."""
    parts = urlsplit(url)
    return bool(parts.hostname) and (parts.scheme == 'https' or (allow_loopback and is_loopback_http(url)))


class KeySetCache(Generic[K]):
    """One published key set, as described in the module docstring. ``load(expired)`` fetches it (``expired``:
    the TTL ran out, rather than a refetch for a key not found) and raises on failure; ``backoff_error``
    builds the error raised while a failed fetch is too recent to try again."""

    def __init__(
        self,
        load: Callable[[bool], K],
        *,
        ttl_seconds: float,
        min_refetch_seconds: float,
        backoff_error: Callable[[], Exception],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._load = load
        self._ttl = ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._backoff_error = backoff_error
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: K | None = None
        self.fetched_at: float | None = None  # the last successful fetch
        self.attempted_at: float | None = None  # the last fetch, successful or not
        self._failed = False
        #: How many times the set was fetched (tests, logs).
        self.fetches = 0

    def find(self, pick: Callable[[K], R | None]) -> R | None:
        """``pick`` over the current set; if it finds nothing, over the set fetched again (rate-limited)."""
        with self._lock:
            now = self._clock()
            if self._keys is None or self.fetched_at is None or now - self.fetched_at >= self._ttl:
                self._fetch(now, expired=True)
            assert self._keys is not None
            found = pick(self._keys)
            if found is None and (self.attempted_at is None or now - self.attempted_at >= self._min_refetch):
                self._fetch(now, expired=False)
                found = pick(self._keys)
            return found

    def _fetch(self, now: float, *, expired: bool) -> None:
        if self._failed and self.attempted_at is not None and now - self.attempted_at < self._min_refetch:
            raise self._backoff_error()
        self.attempted_at = now
        self.fetches += 1
        try:
            keys = self._load(expired)
        except BaseException:
            self._failed = True
            if expired:
                self._keys = None  # never verify with a set past its TTL
            raise
        self._keys, self._failed, self.fetched_at = keys, False, now


def import_public_key(jwk: Any) -> Key | None:
    """The key of one published JWK meant for signatures (RSA, EC or OKP), or None (skipped): never a
    symmetric key, never an encryption key, never one joserfc cannot read."""
    from joserfc.errors import JoseError
    from joserfc.jwk import import_key

    if not isinstance(jwk, dict) or jwk.get('kty') not in ('RSA', 'EC', 'OKP') or jwk.get('use', 'sig') != 'sig':
        return None
    try:
        return import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
