"""A local OpenID Connect issuer on 127.0.0.1: what provider ``local`` signs in with offline.

    issuer = LocalOidcIssuer()             # host='127.0.0.1', port=0 (a free port); default_audience='atelier-local'
    base = issuer.start()                  # 'http://127.0.0.1:PORT': the issuer, and its base URL
    token = issuer.id_token('user-1', email='a@example.com', nonce='n-1')   # what POST /token answers
    issuer.rotate()                        # a new signing key; the old one stays published (drop_old=True: gone)
    issuer.mint({...}, key=other, alg='HS256', headers={'kid': 'nope'})    # a hand-made (bad) token
    issuer.fail(status=503)                # the next request answers 503 (times=None: every request)
    issuer.requests                        # every request: method and path
    issuer.reset()                         # back to the first key, no overrides, failures or requests
    issuer.stop()

It serves ``GET /.well-known/openid-configuration`` (issuer = the base URL, ``jwks_uri``, the signing
algorithms), ``GET /jwks`` (the published public keys with ``kid``, ``alg``, ``use``) and, for
development only, ``POST /token`` with JSON ``{"sub", "email"?, "aud"?, "nonce"?, "expires_in"?}`` ->
``{"id_token", "token_type", "expires_in"}``: an ID token signed with the current key, for
``aud`` (default ``default_audience``). Nothing checks who asks: it exists only offline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from joserfc import jws
from joserfc.jwk import ECKey, OKPKey, RSAKey

from infra.local.http_service import LocalHTTPService

DEFAULT_AUDIENCE = 'atelier-local'
DEFAULT_EXPIRES_IN = 3600
_HMAC = {'HS256': hashlib.sha256, 'HS384': hashlib.sha384, 'HS512': hashlib.sha512}

AsymmetricKey = RSAKey | ECKey | OKPKey


def generate_key(alg: str = 'RS256', *, kid: str | None = None, publish_alg: bool = True) -> AsymmetricKey:
    """A fresh private signing key for ``alg`` (RS*/PS* -> RSA 2048, ES256/384/512 -> EC, Ed25519 -> OKP)."""
    parameters: dict[str, Any] = {'use': 'sig', **({'alg': alg} if publish_alg else {})}
    if kid is not None:
        parameters['kid'] = kid
    if alg.startswith(('RS', 'PS')):
        return RSAKey.generate_key(2048, parameters=parameters, auto_kid=kid is None)  # type: ignore[arg-type]
    if alg.startswith('ES'):
        curve = {'ES256': 'P-256', 'ES384': 'P-384', 'ES512': 'P-521'}[alg]
        return ECKey.generate_key(curve, parameters=parameters, auto_kid=kid is None)  # type: ignore[arg-type]
    if alg == 'Ed25519':
        return OKPKey.generate_key('Ed25519', parameters=parameters, auto_kid=kid is None)  # type: ignore[arg-type]
    raise ValueError(f'no asymmetric key type for {alg}')


class LocalOidcIssuer(LocalHTTPService):
    thread_name = 'local-oidc-issuer'

    def __init__(
        self,
        host: str = '127.0.0.1',
        port: int = 0,
        *,
        default_audience: str = DEFAULT_AUDIENCE,
        alg: str = 'RS256',
        key: AsymmetricKey | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(host, port)
        self.default_audience = default_audience
        self.clock = clock
        self.requests: list[dict[str, str]] = []
        self.discovery_overrides: dict[str, Any] = {}  # merged into the discovery document (e.g. another issuer)
        self._lock = threading.Lock()
        self._first_key = key or generate_key(alg)
        self._published: list[AsymmetricKey] = [self._first_key]  # the last one signs
        self._failure: tuple[int, int | None] | None = None

    def reset(self) -> None:
        """Back to the first key, with no discovery overrides, injected failures or recorded requests."""
        with self._lock:
            self._published = [self._first_key]
            self._failure = None
            self.discovery_overrides.clear()
            self.requests.clear()

    # ---------------------------------------------------------------- keys
    @property
    def issuer(self) -> str:
        return self.base_url

    @property
    def signing_key(self) -> AsymmetricKey:
        with self._lock:
            return self._published[-1]

    @property
    def published_kids(self) -> list[str]:
        with self._lock:
            return [str(key.kid) for key in self._published]

    def rotate(self, *, drop_old: bool = False, alg: str | None = None, publish_alg: bool = True) -> AsymmetricKey:
        """Sign with a new key from now on. The old keys stay published (an overlap) unless ``drop_old``."""
        new_alg = alg or _alg_of(self.signing_key)
        key = generate_key(new_alg, publish_alg=publish_alg)
        with self._lock:
            self._published = [key] if drop_old else [*self._published, key]
        return key

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            return {'keys': [key.as_dict(private=False) for key in self._published]}

    def public_pem(self) -> bytes:
        """The current key's public PEM: what a key-confusion attack (HS256 keyed with it) signs with."""
        pem = self.signing_key.as_pem(private=False)
        return pem if isinstance(pem, bytes) else pem.encode()

    # ---------------------------------------------------------------- tokens
    def claims(
        self,
        sub: str,
        *,
        email: str | None = None,
        aud: str | list[str] | None = None,
        nonce: str | None = None,
        expires_in: int = DEFAULT_EXPIRES_IN,
        **extra: Any,
    ) -> dict[str, Any]:
        """The claims of a good ID token for ``sub``: this issuer, ``aud`` (default audience), now, ``expires_in``."""
        now = int(self.clock())
        claims: dict[str, Any] = {
            'iss': self.issuer,
            'sub': sub,
            'aud': self.default_audience if aud is None else aud,
            'iat': now,
            'exp': now + expires_in,
        }
        if email is not None:
            claims.update(email=email, email_verified=True)
        if nonce is not None:
            claims['nonce'] = nonce
        return {**claims, **extra}

    def id_token(self, sub: str, **options: Any) -> str:
        """A good ID token, signed with the current key (what ``POST /token`` answers)."""
        return self.mint(self.claims(sub, **options))

    def mint(
        self,
        claims: dict[str, Any],
        *,
        key: AsymmetricKey | bytes | None = None,
        alg: str | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """``claims`` signed as asked, to craft the tokens a verifier must refuse.

        ``key``: a private key (default: the current signing key; :func:`generate_key` makes an unpublished
        one), or bytes as the HMAC secret of ``alg='HS256'`` (e.g. :meth:`public_pem`). ``alg``: default the
        key's; ``'none'`` gives an unsigned token. ``headers`` are merged over ``{"alg", "kid", "typ"}``
        (a None value removes one).
        """
        signer = self.signing_key if key is None else key
        alg = alg or (_alg_of(signer) if not isinstance(signer, bytes) else 'HS256')
        header: dict[str, Any] = {'alg': alg, 'typ': 'JWT'}
        if not isinstance(signer, bytes) and signer.kid:
            header['kid'] = signer.kid
        for name, value in (headers or {}).items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        payload = json.dumps(claims, separators=(',', ':')).encode()
        if alg == 'none' or alg in _HMAC:
            signing_input = f'{_b64(json.dumps(header).encode())}.{_b64(payload)}'
            if alg == 'none':
                return f'{signing_input}.'
            secret = signer if isinstance(signer, bytes) else self.public_pem()
            return f'{signing_input}.{_b64(hmac.new(secret, signing_input.encode(), _HMAC[alg]).digest())}'
        assert not isinstance(signer, bytes), 'an asymmetric algorithm needs a key'
        if _alg_of(signer) != alg:  # sign with the key under another algorithm than it is published for
            signer = type(signer).import_key({k: v for k, v in signer.as_dict(private=True).items() if k != 'alg'})
        registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
        return jws.serialize_compact(header, payload, signer, registry=registry)

    # ---------------------------------------------------------------- failures
    def fail(self, *, status: int = 503, times: int | None = 1) -> None:
        """The next ``times`` requests (None: every one, until :meth:`recover`) answer ``status``."""
        with self._lock:
            self._failure = (status, times)

    def recover(self) -> None:
        with self._lock:
            self._failure = None

    def _injected_failure(self) -> int | None:
        with self._lock:
            if self._failure is None:
                return None
            status, times = self._failure
            if times is not None:
                self._failure = (status, times - 1) if times > 1 else None
            return status

    def discovery(self) -> dict[str, Any]:
        with self._lock:
            algs = sorted({_alg_of(key) for key in self._published})
            overrides = dict(self.discovery_overrides)
        return {
            'issuer': self.issuer,
            'jwks_uri': f'{self.issuer}/jwks',
            'response_types_supported': ['id_token'],
            'subject_types_supported': ['public'],
            'id_token_signing_alg_values_supported': algs,
            'claims_supported': ['iss', 'sub', 'aud', 'iat', 'exp', 'email', 'email_verified', 'nonce'],
            **overrides,
        }


def _alg_of(key: AsymmetricKey) -> str:
    alg = key.alg
    if alg:
        return str(alg)
    if isinstance(key, RSAKey):
        return 'RS256'
    if isinstance(key, OKPKey):
        return 'Ed25519'
    return {'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512'}[key.curve_name]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


class _Handler(BaseHTTPRequestHandler):
    server_fake: LocalOidcIssuer
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        path = self._record('GET')
        if path is None:
            return
        if path == '/.well-known/openid-configuration':
            self._json(200, self.server_fake.discovery())
        elif path == '/jwks':
            self._json(200, self.server_fake.jwks())
        else:
            self._json(404, {'error': 'not_found'})

    def do_POST(self) -> None:
        path = self._record('POST')
        if path is None:
            return
        if path != '/token':
            self._json(404, {'error': 'not_found'})
            return
        try:
            body = json.loads(self.rfile.read(int(self.headers.get('Content-Length') or 0)) or b'{}')
        except ValueError:
            body = None
        problem = _token_request_problem(body)
        if problem:
            self._json(400, {'error': 'invalid_request', 'error_description': problem})
            return
        expires_in = int(body.get('expires_in', DEFAULT_EXPIRES_IN))
        options = {name: body[name] for name in ('email', 'aud', 'nonce') if body.get(name) is not None}
        token = self.server_fake.id_token(body['sub'], expires_in=expires_in, **options)
        self._json(200, {'id_token': token, 'token_type': 'Bearer', 'expires_in': expires_in})

    def _record(self, method: str) -> str | None:
        """The request's path, or None when an injected failure has answered it."""
        path = urlsplit(self.path).path
        with self.server_fake._lock:
            self.server_fake.requests.append({'method': method, 'path': path})
        status = self.server_fake._injected_failure()
        if status is not None:
            self._json(status, {'error': 'injected_failure'})
            return None
        return path

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _token_request_problem(body: Any) -> str | None:
    if not isinstance(body, dict):
        return 'the body is a JSON object'
    if not isinstance(body.get('sub'), str) or not body['sub']:
        return '"sub" is a non-empty string'
    for name in ('email', 'nonce'):
        if body.get(name) is not None and not isinstance(body[name], str):
            return f'"{name}" is a string'
    aud = body.get('aud')
    if aud is not None and not (
        (isinstance(aud, str) and aud) or (isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud))
    ):
        return '"aud" is a string or a list of strings'
    expires_in = body.get('expires_in', DEFAULT_EXPIRES_IN)
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 0 < expires_in <= 24 * 3600:
        return '"expires_in" is a number of seconds, 1 to 86400'
    return None


LocalOidcIssuer.handler = _Handler
