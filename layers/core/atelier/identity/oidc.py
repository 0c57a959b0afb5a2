"""Sign-in with an outside OpenID Connect provider: verify its ID token and say whom it names.

Providers are configuration, one JSON list in one setting (``OIDC_PROVIDERS``), parsed by
:func:`parse_providers`::

    [{"id": "apple", "issuer": "https://appleid.apple.com", "client_ids": ["com.example.app"]},
     {"id": "firebase", "issuer": "https://securetoken.google.com/my-project", "client_ids": ["my-project"]}]

:class:`OidcVerifier` checks an ID token against the key set its issuer publishes: the JWKS is found
through the issuer's discovery document (``{issuer}/.well-known/openid-configuration``, whose ``issuer``
must be the configured one), kept per process for an hour, and fetched again when a token names a key
it does not hold (at most once per ``min_refetch_seconds`` per issuer, so a flood of made-up ``kid``
values cannot hammer the issuer). A key the issuer publishes before signing with it is therefore
picked up without downtime, and a key it drops stops verifying at the next refresh.

The algorithm comes from the key (its JWK ``alg``, else its type and curve) and must be asymmetric
(RS*, PS*, ES*, or Ed25519 by its RFC 9864 name; the deprecated polymorphic ``EdDSA`` is not taken):
``none`` and HS* are refused before any key is looked at, and a token whose header names another
algorithm than its key is refused. Then: ``iss`` exact, ``aud`` one of the
provider's client ids (``azp`` too when there are several audiences and it is present), ``exp``,
``iat`` and ``nbf`` with :data:`LEEWAY_SECONDS`, a non-empty ``sub``, the ``nonce`` when the caller
sends one, and for Firebase an ``auth_time``.

The nonce is compared exactly (in constant time). Apple puts into the token whatever the app passed to
the authorization request, which many apps make the SHA-256 hex of their raw nonce: the client sends
the value it gave Apple, and Atelier neither hashes nor accepts a hash.

The JOSE library (joserfc) and httpx are imported on first use, so functions that only list the
providers do not pay for them at cold start.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from atelier.errors import DomainError, ErrorKind, NotFound, Unauthorized
from atelier.jwks import LOOPBACK_HOSTS, KeySetCache, https_or_loopback, import_public_key, is_loopback_http

if TYPE_CHECKING:
    import httpx
    from joserfc.jwk import Key

LEEWAY_SECONDS = 60  # clock skew allowed on exp, iat, nbf and auth_time
JWKS_TTL_SECONDS = 3600.0  # how long a fetched key set (and discovery document) is trusted
MIN_REFETCH_SECONDS = 30.0  # at most one fetch per issuer in this window (unknown kid, or after a failure)
HTTP_TIMEOUT_SECONDS = 3.0
HTTP_CONNECT_TIMEOUT_SECONDS = 2.0

#: The only algorithms an ID token may be signed with: asymmetric ones. Never ``none``, never HS*.
SIGNING_ALGORITHMS = frozenset(
    {'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'Ed25519'}
)
_ALG_BY_CURVE = {'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512', 'Ed25519': 'Ed25519'}
_LOOPBACK_HOSTS = LOOPBACK_HOSTS
_FIREBASE_ISSUER_PREFIX = 'https://securetoken.google.com/'
#: Google documents that its ID tokens carry either form of its issuer.
_ISSUER_ALIASES = {'https://accounts.google.com': frozenset({'accounts.google.com'})}


# ---------------------------------------------------------------- errors
class InvalidIdToken(Unauthorized):
    """The ID token is not one the provider issued for us, now (401). Nothing about the caller is trusted."""

    code = 'invalid_id_token'


class UnknownProvider(NotFound):
    """The request names a provider that is not enabled (404: GET /v1/auth/providers lists those that are)."""

    code = 'unknown_provider'


class IdentityProviderUnavailable(DomainError):
    """The provider's discovery document or key set could not be fetched or read; retrying is safe (503)."""

    kind = ErrorKind.UNAVAILABLE
    code = 'identity_provider_unavailable'


class InvalidProviderConfig(ValueError):
    """The providers setting is not valid: a deployment error, raised at cold start."""


# ---------------------------------------------------------------- configuration
_ClientId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)]


class OidcProvider(BaseModel):
    """One enabled sign-in provider: its id in the API, its issuer, and the client ids its tokens may be for."""

    model_config = ConfigDict(frozen=True, extra='forbid')

    id: Annotated[str, StringConstraints(strict=True, pattern=r'^[a-z0-9][a-z0-9_-]{0,63}$')]
    issuer: Annotated[str, StringConstraints(strict=True, min_length=1, max_length=512)]
    client_ids: tuple[_ClientId, ...] = Field(min_length=1)

    @field_validator('issuer')
    @classmethod
    def _issuer_is_https(cls, issuer: str, info: ValidationInfo) -> str:
        allow_insecure_local = bool((info.context or {}).get('allow_insecure_local'))
        parts = urlsplit(issuer)
        if parts.query or parts.fragment or parts.username or parts.password or not parts.hostname:
            raise ValueError('an issuer is an https URL with a host and no query, fragment or credentials')
        if parts.scheme == 'https':
            return issuer
        if parts.scheme == 'http' and parts.hostname in _LOOPBACK_HOSTS and allow_insecure_local:
            return issuer
        if parts.scheme == 'http' and parts.hostname in _LOOPBACK_HOSTS:
            raise ValueError('an http issuer on the loopback interface is allowed only offline (allow_insecure_local)')
        raise ValueError('an issuer must be an https URL')

    @field_validator('client_ids')
    @classmethod
    def _client_ids_are_unique(cls, client_ids: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(client_ids)) != len(client_ids):
            raise ValueError('client ids must be unique')
        return client_ids


_PROVIDER_LIST = TypeAdapter(list[OidcProvider])


def parse_providers(setting: str, *, allow_insecure_local: bool = False) -> tuple[OidcProvider, ...]:
    """The providers of the ``OIDC_PROVIDERS`` setting (a JSON list; empty means none is enabled).

    Strict: unknown fields, duplicate ids or issuers, an empty client id list and non-https issuers are
    refused with :class:`InvalidProviderConfig`. ``http://127.0.0.1`` / ``localhost`` issuers pass only
    with ``allow_insecure_local`` (the offline stack's local issuer).
    """
    if not setting.strip():
        return ()
    try:
        providers = _PROVIDER_LIST.validate_json(setting, context={'allow_insecure_local': allow_insecure_local})
    except ValidationError as exc:
        problems = '; '.join(
            f'{".".join(str(part) for part in error["loc"]) or "setting"}: {error["msg"]}' for error in exc.errors()
        )
        raise InvalidProviderConfig(f'OIDC_PROVIDERS is not valid: {problems}') from None
    for attribute in ('id', 'issuer'):
        values = [getattr(provider, attribute) for provider in providers]
        duplicates = sorted({value for value in values if values.count(value) > 1})
        if duplicates:
            raise InvalidProviderConfig(f'OIDC_PROVIDERS is not valid: duplicate {attribute} {", ".join(duplicates)}')
    return tuple(providers)


# ---------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class VerifiedIdentity:
    """Whom a verified ID token names. ``(issuer, subject)`` is the stable identity; email is informative."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool
    provider: str


# ---------------------------------------------------------------- verification
@dataclass(frozen=True, slots=True)
class _SigningKey:
    kid: str | None
    alg: str
    key: Key


_Keys = dict[str | None, _SigningKey]


def _find(keys: _Keys, kid: str | None) -> _SigningKey | None:
    if kid is None:  # a token without kid is accepted only from an issuer with a single key
        return next(iter(keys.values())) if len(keys) == 1 else None
    return keys.get(kid)


class OidcVerifier:
    """Verifies ID tokens of the configured providers against their published keys (cached per process).

    ``http`` (an ``httpx.Client``) and ``clock`` (epoch seconds) are injectable for tests; the defaults
    are a client with short timeouts and :func:`time.time`.
    """

    def __init__(
        self,
        providers: Iterable[OidcProvider],
        *,
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
        leeway_seconds: int = LEEWAY_SECONDS,
        jwks_ttl_seconds: float = JWKS_TTL_SECONDS,
        min_refetch_seconds: float = MIN_REFETCH_SECONDS,
    ) -> None:
        self._providers = {provider.id: provider for provider in providers}
        self._http = http
        self._clock = clock
        self._leeway = leeway_seconds
        self._ttl = jwks_ttl_seconds
        self._min_refetch = min_refetch_seconds
        self._cache: dict[str, KeySetCache[_Keys]] = {}
        self._cache_lock = threading.Lock()

    @property
    def providers(self) -> tuple[OidcProvider, ...]:
        """The enabled providers, in configuration order."""
        return tuple(self._providers.values())

    def verify(self, provider_id: str, id_token: str, nonce: str | None = None) -> VerifiedIdentity:
        """Whom ``id_token`` names, if provider ``provider_id`` signed it for one of its client ids and it is current.

        Raises :class:`UnknownProvider` (422) for a provider that is not enabled, :class:`InvalidIdToken`
        (401) for any token that fails a check, :class:`IdentityProviderUnavailable` (503) when the
        provider's keys cannot be fetched.
        """
        provider = self._providers.get(provider_id)
        if provider is None:
            raise UnknownProvider(f'No sign-in provider "{provider_id}" is enabled.')
        from joserfc import jws
        from joserfc.errors import JoseError

        try:
            token = jws.extract_compact(id_token.encode('ascii'))
        except (JoseError, ValueError, TypeError) as exc:
            raise InvalidIdToken('The ID token is malformed.') from exc
        header = token.headers()
        alg, kid = header.get('alg'), header.get('kid')
        # Refusing every algorithm but the asymmetric ones, before any key is touched, is what defeats
        # `alg: none` and HS256 signed with the provider's public key.
        if not isinstance(alg, str) or alg not in SIGNING_ALGORITHMS:
            raise InvalidIdToken('The ID token is not signed with an accepted algorithm (RS*, PS*, ES*, Ed25519).')
        if (kid is not None and not isinstance(kid, str)) or 'crit' in header or 'b64' in header:
            raise InvalidIdToken('The ID token header is not valid.')
        key = self._signing_key(provider, kid)
        if key.alg != alg:
            raise InvalidIdToken('The ID token names another algorithm than its key.')
        try:
            registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
            valid = jws.validate_compact(token, key.key, registry=registry)
        except (JoseError, ValueError, TypeError):
            valid = False
        if not valid:
            raise InvalidIdToken('The ID token signature is not valid.')
        try:
            claims = json.loads(token.payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidIdToken('The ID token is malformed.') from exc
        if not isinstance(claims, dict):
            raise InvalidIdToken('The ID token is malformed.')
        return self._identity(provider, claims, nonce)

    # ---------------------------------------------------------------- claims
    def _identity(self, provider: OidcProvider, claims: dict[str, Any], nonce: str | None) -> VerifiedIdentity:
        issuer = claims.get('iss')
        if issuer != provider.issuer and issuer not in _ISSUER_ALIASES.get(provider.issuer, ()):
            raise InvalidIdToken(f'The ID token was not issued by {provider.id}.')
        self._check_audience(provider, claims)
        self._check_lifetime(provider, claims)
        subject = claims.get('sub')
        if not isinstance(subject, str) or not subject:
            raise InvalidIdToken('The ID token names no subject.')
        if nonce is not None:
            claimed = claims.get('nonce')
            # Bytes, not str: compare_digest refuses non-ASCII strings, and both sides are client input.
            if not isinstance(claimed, str) or not hmac.compare_digest(claimed.encode(), nonce.encode()):
                raise InvalidIdToken('The ID token nonce does not match.')
        email = claims.get('email')
        # Apple sends email_verified as the string "true".
        verified = claims.get('email_verified') in (True, 'true')
        return VerifiedIdentity(
            issuer=provider.issuer,
            subject=subject,
            email=email if isinstance(email, str) and email else None,
            email_verified=verified and isinstance(email, str) and bool(email),
            provider=provider.id,
        )

    @staticmethod
    def _check_audience(provider: OidcProvider, claims: dict[str, Any]) -> None:
        audience = claims.get('aud')
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not all(isinstance(item, str) for item in audiences):
            raise InvalidIdToken('The ID token has no valid audience.')
        if not set(audiences) & set(provider.client_ids):
            raise InvalidIdToken('The ID token is for another client.')
        # With several audiences, the party it was issued to must be ours too (OpenID Connect Core 3.1.3.7).
        if len(audiences) > 1 and 'azp' in claims and claims['azp'] not in provider.client_ids:
            raise InvalidIdToken('The ID token was issued to another client (azp).')

    def _check_lifetime(self, provider: OidcProvider, claims: dict[str, Any]) -> None:
        now = self._clock()
        expires_at, issued_at = _time_claim(claims, 'exp'), _time_claim(claims, 'iat')
        if expires_at is None or issued_at is None:
            raise InvalidIdToken('The ID token has no valid lifetime.')
        if now >= expires_at + self._leeway:
            raise InvalidIdToken('The ID token has expired.', code='id_token_expired')
        if issued_at > now + self._leeway:
            raise InvalidIdToken('The ID token is issued in the future.')
        if 'nbf' in claims:
            not_before = _time_claim(claims, 'nbf')
            if not_before is None or not_before > now + self._leeway:
                raise InvalidIdToken('The ID token is not valid yet.')
        if provider.issuer.startswith(_FIREBASE_ISSUER_PREFIX):
            auth_time = _time_claim(claims, 'auth_time')
            if auth_time is None or auth_time > now + self._leeway:
                raise InvalidIdToken('The Firebase ID token has no valid auth_time.')

    # ---------------------------------------------------------------- keys
    def _signing_key(self, provider: OidcProvider, kid: str | None) -> _SigningKey:
        with self._cache_lock:
            cache = self._cache.get(provider.issuer)
            if cache is None:
                cache = self._cache[provider.issuer] = self._key_cache(provider)
        # An unknown kid: perhaps the issuer rotated. The cache looks once; its window stops a flood of made-up kids.
        key = cache.find(lambda keys: _find(keys, kid))
        if key is None:
            raise InvalidIdToken(f'The ID token is signed with a key {provider.id} does not publish.')
        return key

    def _key_cache(self, provider: OidcProvider) -> KeySetCache[_Keys]:
        jwks_uri: list[str] = []  # found by discovery, again each time the key set's TTL runs out

        def load(expired: bool) -> _Keys:
            if expired or not jwks_uri:
                jwks_uri[:] = [self._discover(provider)]
            return self._fetch_keys(provider, jwks_uri[0])

        return KeySetCache(
            load,
            ttl_seconds=self._ttl,
            min_refetch_seconds=self._min_refetch,
            backoff_error=lambda: IdentityProviderUnavailable(
                f'The sign-in provider {provider.id} cannot be reached; try again soon.'
            ),
            clock=self._clock,
        )

    def _discover(self, provider: OidcProvider) -> str:
        document = self._get_json(provider, provider.issuer.rstrip('/') + '/.well-known/openid-configuration')
        if document.get('issuer') != provider.issuer:
            raise IdentityProviderUnavailable(
                f'The discovery document of {provider.id} names another issuer than {provider.issuer}.',
                code='identity_provider_misconfigured',
            )
        jwks_uri = document.get('jwks_uri')
        if not isinstance(jwks_uri, str) or not _trusted_url(jwks_uri, insecure_local=_is_local(provider.issuer)):
            raise IdentityProviderUnavailable(
                f'The discovery document of {provider.id} has no https jwks_uri.',
                code='identity_provider_misconfigured',
            )
        return jwks_uri

    def _fetch_keys(self, provider: OidcProvider, jwks_uri: str) -> dict[str | None, _SigningKey]:
        document = self._get_json(provider, jwks_uri)
        published = document.get('keys')
        if not isinstance(published, list):
            raise IdentityProviderUnavailable(f'The key set of {provider.id} is not a JWKS.')
        keys: dict[str | None, _SigningKey] = {}
        for jwk in published:
            key = _signing_key_from_jwk(jwk)
            if key is not None and key.kid not in keys:
                keys[key.kid] = key
        return keys

    def _get_json(self, provider: OidcProvider, url: str) -> dict[str, Any]:
        import httpx

        if self._http is None:
            timeout = httpx.Timeout(HTTP_TIMEOUT_SECONDS, connect=HTTP_CONNECT_TIMEOUT_SECONDS)
            self._http = httpx.Client(timeout=timeout)
        try:
            response = self._http.get(url, headers={'Accept': 'application/json'})
        except httpx.HTTPError as exc:
            raise IdentityProviderUnavailable(f'The sign-in provider {provider.id} cannot be reached.') from exc
        if response.status_code != 200:
            raise IdentityProviderUnavailable(
                f'The sign-in provider {provider.id} answered HTTP {response.status_code} for {url}.'
            )
        try:
            document = response.json()
        except ValueError as exc:
            raise IdentityProviderUnavailable(
                f'The sign-in provider {provider.id} answered no JSON for {url}.'
            ) from exc
        if not isinstance(document, dict):
            raise IdentityProviderUnavailable(f'The sign-in provider {provider.id} answered no JSON object for {url}.')
        return document


def _signing_key_from_jwk(jwk: Any) -> _SigningKey | None:
    """The verification key of one published JWK, or None for one that cannot sign ID tokens (skipped)."""
    from joserfc.errors import JoseError
    from joserfc.jws import JWSRegistry

    key = import_public_key(jwk)  # never a symmetric key, never an encryption key
    if key is None:
        return None
    kid = jwk.get('kid')
    alg = jwk.get('alg') or ('RS256' if jwk['kty'] == 'RSA' else _ALG_BY_CURVE.get(str(jwk.get('crv'))))
    if alg not in SIGNING_ALGORITHMS or (kid is not None and not isinstance(kid, str)):
        return None
    try:
        JWSRegistry.algorithms[alg].check_key(key)
    except (JoseError, ValueError, TypeError, KeyError):
        return None
    return _SigningKey(kid=kid, alg=alg, key=key)


def _time_claim(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _is_local(url: str) -> bool:
    return is_loopback_http(url)


def _trusted_url(url: str, *, insecure_local: bool) -> bool:
    return https_or_loopback(url, allow_loopback=insecure_local)
