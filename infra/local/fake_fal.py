"""A fake fal.ai on 127.0.0.1: the queue API, signed webhooks and a JWKS, as fal documents them.

    fal = FakeFal()                      # host='127.0.0.1', port=0 (a free port)
    base = fal.start()                   # -> FalApiBase; f'{base}/.well-known/jwks.json' -> FalJwksUrl
    fal.rotate_key()                     # a new signing key (new kid), published in the JWKS
    fal.requests[request_id]             # what it holds; fal.deliveries: every webhook sent
    fal.stop()

What it replays (the reference doc's sources; https://docs.fal.ai/model-apis/model-endpoints/queue,
https://fal.ai/docs/api-reference/inference-api, https://docs.fal.ai/model-apis/model-endpoints/webhooks,
https://fal.ai/docs/inference-api/queue/cancel):

- ``POST /{model_id}?fal_webhook={url}`` with ``Authorization: Key <token>`` queues a request and answers
  ``{"request_id", "gateway_request_id", "status": "IN_QUEUE", "queue_position", "status_url",
  "response_url", "cancel_url"}``; the URLs name the model's *app* (``/fal-ai/flux/requests/{id}``, not
  ``/fal-ai/flux/dev/...``), as fal's do. ``X-Fal-Request-Timeout`` is the start timeout: a request still
  queued after it ends with 504 and ``X-Fal-Request-Timeout-Type: user``.
- ``GET .../requests/{id}/status``: ``IN_QUEUE`` (with ``queue_position``, 0 = next) -> ``IN_PROGRESS`` ->
  ``COMPLETED``; there is no failed status (a failure is ``COMPLETED`` and its result is the error).
- ``GET .../requests/{id}`` (the result): 400 while not completed; 200 with the model's output (``images``
  of fal ``File`` objects, or a ``video``) and the ``x-fal-billable-units`` header; else the error status.
- ``PUT .../requests/{id}/cancel``: queued -> removed, ``200 {"status": "OK"}`` (its result then answers 499,
  as observed at fal; no webhook); running -> ``202 {"status": "CANCELLATION_REQUESTED"}``, and this fake's
  apps ignore the signal and complete ("the app decides"); finished -> ``400 ALREADY_COMPLETED``; unknown ->
  ``404 NOT_FOUND``.
- Webhooks (completion only) ``{"request_id", "gateway_request_id", "status": "OK"|"ERROR", "payload",
  "error"?, "payload_error"?}``, signed like fal's: ED25519 over ``request_id\\nuser_id\\ntimestamp\\n
  sha256hex(body)`` in ``X-Fal-Webhook-{Request-Id,User-Id,Timestamp,Signature}`` (hex), with the key
  published at ``GET /.well-known/jwks.json`` (``{"keys": [{"kty": "OKP", "crv": "Ed25519", "x", "kid"}]}``).
  A delivery that fails is retried with backoff (fal: 10 times over 2 hours; here ``webhook_attempts``
  tries, scaled by ``time_scale``).
- Input validation as fal's model endpoints do it (422 with a ``detail`` list of ``{loc, msg, type}``): the
  Kling 2 image-to-video models take ``prompt``, ``image_url``, ``duration`` (the strings ``"5"`` or
  ``"10"``), ``negative_prompt`` and ``cfg_scale``, nothing else (no ``resolution``;
  https://fal.ai/models/fal-ai/kling-video/v2/master/image-to-video).
- ``GET /files/{id}/{n}.png|mp4`` serves the outputs' bytes (fal's CDN: no key needed).

Quirks, by a marker in the prompt (like the mock provider's models):

======================  ============================================================================
``fal:queued``          no runner takes it: it stays ``IN_QUEUE`` until canceled or its start timeout
``fal:slow``            runs about 4 s (cancel while running)
``fal:held``            runs until the test calls :meth:`FakeFal.finish` (deterministic "while running")
``fal:error-null``      fails; the webhook is ``ERROR`` with ``payload: null`` and a ``payload_error``
                        (fal-js#153); the result answers 500
``fal:422``             ``COMPLETED``, then the result answers 422 (TanStack/ai PR#396); the webhook is
                        ``ERROR`` ``"Invalid status code: 422"`` with the validation detail
``fal:retry``           the first runner disconnects: fal retries it internally (back to ``IN_QUEUE``,
                        a new ``gateway_request_id``, the same ``request_id``), the retry succeeds
``fal:no-webhook``      no webhook is sent (a lost webhook)
``fal:result-400``      ``COMPLETED``, but the result answers 400 "still in progress" (the webhook says ``OK``)
``fal:nsfw``            every image is flagged in ``has_nsfw_concepts`` (and black, as FLUX [dev] returns them)
``fal:nsfw-first``      only the first image is flagged
``fal:foreign-output``  completes, but its outputs' URLs name a host no fal CDN uses (``files.example.net``):
                        a provider (or a forged result) pointing settle somewhere else
======================  ============================================================================

``POST /_fake/rotate-key`` rotates the signing key from outside the process (curl), like :meth:`rotate_key`.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from atelier.providers.fal.signing import message
from atelier.providers.mock import media
from infra.local.http_service import LocalHTTPService

LOCAL_TOKEN = 'fal_atelier_local'
USER_ID = 'atelier-local-user'
_REQUEST = re.compile(r'^/([\w.-]+/[\w.-]+)/requests/([\w-]+)(/status|/cancel)?$')
_FILE = re.compile(r'^/files/([\w-]+)/(\d+)\.(png|mp4)$')
_CONTENT_TYPES = {'png': 'image/png', 'mp4': 'video/mp4'}
_SIZES = {'square': 0.25, 'square_hd': 1.0}
#: fal's Kling 2 image-to-video input: field -> allowed values (None: any), and the required fields.
_KLING_FIELDS: dict[str, frozenset[Any] | None] = {
    'prompt': None,
    'image_url': None,
    'duration': frozenset({'5', '10'}),
    'negative_prompt': None,
    'cfg_scale': None,
}
_KLING_REQUIRED = ('prompt', 'image_url')


def input_errors(model_id: str, body: Any) -> list[dict[str, Any]]:
    """What fal's validation says of ``body`` for ``model_id`` (empty: valid). Only the Kling models are checked."""
    if not re.match(r'^fal-ai/kling-video/v2(\.\d)?/\w+/image-to-video$', model_id):
        return []
    if not isinstance(body, dict):
        return [{'loc': ['body'], 'msg': 'Input should be a valid dictionary', 'type': 'dict_type'}]
    errors = [
        {'loc': ['body', name], 'msg': 'Field required', 'type': 'missing'}
        for name in _KLING_REQUIRED
        if name not in body
    ]
    for name, value in body.items():
        if name not in _KLING_FIELDS:
            errors.append({'loc': ['body', name], 'msg': 'Extra inputs are not permitted', 'type': 'extra_forbidden'})
        elif (allowed := _KLING_FIELDS[name]) is not None and value not in allowed:
            expected = ' or '.join(repr(v) for v in sorted(allowed))
            errors.append({'loc': ['body', name], 'msg': f'Input should be {expected}', 'type': 'literal_error'})
    return errors


@dataclass
class FalRequest:
    """One queued request, as the fake keeps it."""

    request_id: str
    app: str
    model_id: str
    input: dict[str, Any]
    webhook_url: str
    start_timeout: float | None
    submitted_at: float = field(default_factory=time.monotonic)
    gateway_request_id: str = ''
    status: str = 'IN_QUEUE'
    attempts: int = 0
    cancel_requested: bool = False
    #: Once completed: the result's HTTP status, body and headers, and the webhook's body.
    result: tuple[int, dict[str, Any], dict[str, str]] | None = None
    webhook: dict[str, Any] | None = None

    def marked(self, marker: str) -> bool:
        return f'fal:{marker}' in str(self.input.get('prompt', '')).lower()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip('=')


class FakeFal(LocalHTTPService):
    thread_name = 'fake-fal'

    def __init__(
        self,
        host: str = '127.0.0.1',
        port: int = 0,
        *,
        token: str = LOCAL_TOKEN,
        time_scale: float = 1.0,
        workers: int = 2,
        webhook_attempts: int = 10,
    ) -> None:
        super().__init__(host, port)
        #: The origin of the URLs a submit answers, by URL name (``status_url``...; default: this server's own).
        #: A misconfigured deployment sees fal answer on another origin than its FalApiBase.
        self.url_origins: dict[str, str] = {}
        self.token = token
        self.time_scale = time_scale
        self.workers = workers
        self.webhook_attempts = webhook_attempts
        self.requests: dict[str, FalRequest] = {}
        #: Every submit that reached the fake: (model id, headers (lower-case), query, JSON body).
        self.submits: list[tuple[str, dict[str, str], dict[str, str], Any]] = []
        #: Every webhook delivery attempt: (request id, status sent, HTTP status or 0, kid).
        self.deliveries: list[tuple[str, str, int, str]] = []
        self._queue: list[str] = []
        self._running = 0
        self._keys: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._finish: dict[str, threading.Event] = {}
        self.rotate_key()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> str:
        url = super().start()
        threading.Thread(target=self._dispatch, name='fake-fal-queue', daemon=True).start()
        return url

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    # ---------------------------------------------------------------- the test's controls
    def rotate_key(self, *, retire_old: bool = False) -> str:
        """Sign with a new Ed25519 key from now on, published in the JWKS (the old ones too, unless retired)."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        kid = f'fal-local-{uuid.uuid4().hex[:12]}'
        with self._lock:
            self._keys = [*([] if retire_old else self._keys), (kid, Ed25519PrivateKey.generate())]
        return kid

    @property
    def kid(self) -> str:
        return self._keys[-1][0]

    def jwks(self) -> dict[str, Any]:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        with self._lock:
            keys = list(self._keys)
        return {
            'keys': [
                {
                    'kty': 'OKP',
                    'crv': 'Ed25519',
                    'kid': kid,
                    'alg': 'EdDSA',
                    'use': 'sig',
                    'x': _b64url(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)),
                }
                for kid, key in keys
            ]
        }

    def signed_headers(
        self, body: bytes, request_id: str, *, timestamp: int | None = None, key: Any = None, user_id: str = USER_ID
    ) -> dict[str, str]:
        """fal's four signature headers for ``body`` (the current key unless ``key`` is given)."""
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signer = key if key is not None else self._keys[-1][1]
        signature = signer.sign(message(request_id, user_id, ts, body)).hex()
        return {
            'X-Fal-Webhook-Request-Id': request_id,
            'X-Fal-Webhook-User-Id': user_id,
            'X-Fal-Webhook-Timestamp': ts,
            'X-Fal-Webhook-Signature': signature,
        }

    def finish(self, request_id: str) -> None:
        """Let a ``fal:held`` request's app complete its work."""
        with self._lock:
            event = self._finish.setdefault(request_id, threading.Event())
        event.set()

    def redeliver(self, request_id: str, webhook: dict[str, Any] | None = None) -> int:
        """Send the request's webhook again (or ``webhook`` instead), once; the HTTP status answered."""
        request = self.requests[request_id]
        return self._deliver(request, webhook or request.webhook or {}, attempts=1)

    # ---------------------------------------------------------------- the queue
    def submit(self, model_id: str, body: Any, webhook_url: str, start_timeout: float | None) -> dict[str, Any]:
        app = '/'.join(model_id.split('/')[:2])
        request_id = str(uuid.uuid4())
        request = FalRequest(
            request_id=request_id,
            app=app,
            model_id=model_id,
            input=body if isinstance(body, dict) else {},
            webhook_url=webhook_url,
            start_timeout=start_timeout,
            gateway_request_id=request_id,
        )
        with self._lock:
            self.requests[request_id] = request
            self._queue.append(request_id)
            position = self._position(request)
        path = f'/{app}/requests/{request_id}'

        def url(name: str, suffix: str = '') -> str:
            return f'{self.url_origins.get(name, self.base_url)}{path}{suffix}'

        return {
            'request_id': request_id,
            'gateway_request_id': request_id,
            'status': 'IN_QUEUE',
            'queue_position': position,
            'status_url': url('status_url', '/status'),
            'response_url': url('response_url'),
            'cancel_url': url('cancel_url', '/cancel'),
        }

    def _position(self, request: FalRequest) -> int:
        return self._queue.index(request.request_id) if request.request_id in self._queue else 0

    def status(self, request: FalRequest) -> dict[str, Any]:
        with self._lock:
            body: dict[str, Any] = {
                'status': request.status,
                'request_id': request.request_id,
                'response_url': f'{self.base_url}/{request.app}/requests/{request.request_id}',
                'logs': None,
            }
            if request.status == 'IN_QUEUE':
                body['queue_position'] = self._position(request)
        return body

    def cancel(self, request: FalRequest) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if request.status == 'IN_QUEUE':
                self._queue.remove(request.request_id)
                request.status = 'COMPLETED'
                request.result = (499, {'detail': 'client_cancelled'}, {})
                return 200, {'status': 'OK'}
            if request.status == 'IN_PROGRESS':
                request.cancel_requested = True  # the app decides: these apps finish their work
                return 202, {'status': 'CANCELLATION_REQUESTED'}
        return 400, {'status': 'ALREADY_COMPLETED'}

    def _dispatch(self) -> None:
        while not self._stopping.wait(0.05):
            now = time.monotonic()
            with self._lock:
                for request_id in list(self._queue):
                    request = self.requests[request_id]
                    if request.start_timeout is not None and now - request.submitted_at > request.start_timeout:
                        self._queue.remove(request_id)
                        self._complete(
                            request,
                            (
                                504,
                                {'detail': 'Request timed out before it could start.'},
                                {'x-fal-request-timeout-type': 'user', 'x-fal-error-type': 'request_timeout'},
                            ),
                            {
                                'status': 'ERROR',
                                'error': 'Request timed out',
                                'payload': {'detail': 'Request timed out'},
                            },
                        )
                ready = [r for r in self._queue if not self.requests[r].marked('queued')]
                while ready and self._running < self.workers:
                    request = self.requests[ready.pop(0)]
                    self._queue.remove(request.request_id)
                    request.status = 'IN_PROGRESS'
                    request.attempts += 1
                    self._running += 1
                    threading.Thread(target=self._run, args=(request,), daemon=True).start()

    def _run(self, request: FalRequest) -> None:
        try:
            if request.marked('held'):
                with self._lock:
                    finish = self._finish.setdefault(request.request_id, threading.Event())
                while not finish.wait(0.05) and not self._stopping.is_set():
                    pass
            else:
                self._stopping.wait((4.0 if request.marked('slow') else 0.8) * self.time_scale)
            if self._stopping.is_set():
                return
            with self._lock:
                if request.marked('retry') and request.attempts == 1:
                    # The runner disconnected: fal retries the request itself, under a new gateway id.
                    request.status, request.gateway_request_id = 'IN_QUEUE', str(uuid.uuid4())
                    self._queue.insert(0, request.request_id)
                    return
                self._complete(request, *self._outcome(request))
        finally:
            with self._lock:
                self._running -= 1

    def _outcome(self, request: FalRequest) -> tuple[tuple[int, dict[str, Any], dict[str, str]], dict[str, Any]]:
        if request.marked('error-null'):
            payload_error = (
                'Response payload is not JSON serializable. Either return a JSON serializable '
                'object or use the queue endpoint to retrieve the response.'
            )
            return (500, {'detail': 'Internal Server Error'}, {'x-fal-error-type': 'internal_error'}), {
                'status': 'ERROR',
                'error': 'Internal Server Error',
                'payload': None,
                'payload_error': payload_error,
            }
        if request.marked('422'):
            detail = [
                {
                    'loc': ['body', 'prompt'],
                    'msg': 'The prompt was flagged by the content checker.',
                    'type': 'value_error',
                }
            ]
            return (422, {'detail': detail}, {}), {
                'status': 'ERROR',
                'error': 'Invalid status code: 422',
                'payload': {'detail': detail},
            }
        result, units = self._result(request)
        if request.marked('result-400'):
            return (400, {'detail': 'Request is still in progress'}, {}), {'status': 'OK', 'payload': result}
        return (200, result, {'x-fal-billable-units': units}), {'status': 'OK', 'payload': result}

    def _result(self, request: FalRequest) -> tuple[dict[str, Any], str]:
        origin = 'https://files.example.net' if request.marked('foreign-output') else self.base_url
        base = f'{origin}/files/{request.request_id}'
        if 'duration' in request.input or 'video' in request.model_id:
            seconds = int(str(request.input.get('duration') or 5))
            video = {'url': f'{base}/0.mp4', 'content_type': 'video/mp4', 'file_name': 'output.mp4'}
            return {'video': video}, str(seconds)
        count = int(request.input.get('num_images') or 1)
        images = [
            {'url': f'{base}/{n}.png', 'content_type': 'image/png', 'file_name': f'{n}.png', 'width': 64, 'height': 64}
            for n in range(count)
        ]
        units = count * _SIZES.get(str(request.input.get('image_size')), 1.0)
        seed = request.input.get('seed') if isinstance(request.input.get('seed'), int) else 42
        result = {
            'images': images,
            'seed': seed,
            'has_nsfw_concepts': [
                request.marked('nsfw') and (n == 0 or not request.marked('nsfw-first')) for n in range(count)
            ],
            'prompt': request.input.get('prompt'),
        }
        return result, f'{units:g}'

    def _complete(
        self, request: FalRequest, result: tuple[int, dict[str, Any], dict[str, str]], webhook: dict[str, Any]
    ) -> None:
        """Under the lock: the request is done; its webhook goes out (on a thread of its own)."""
        request.status, request.result = 'COMPLETED', result
        request.webhook = {
            'request_id': request.request_id,
            'gateway_request_id': request.gateway_request_id,
            **webhook,
        }
        if request.webhook_url and not request.marked('no-webhook'):
            threading.Thread(target=self._deliver, args=(request, request.webhook), daemon=True).start()

    def _deliver(self, request: FalRequest, webhook: dict[str, Any], attempts: int | None = None) -> int:
        import httpx

        body = json.dumps(webhook).encode()
        status = 0
        for attempt in range(attempts or self.webhook_attempts):
            if self._stopping.is_set():
                return status
            kid = self.kid
            headers = {'Content-Type': 'application/json', **self.signed_headers(body, request.request_id)}
            try:
                status = httpx.post(request.webhook_url, content=body, headers=headers, timeout=10).status_code
            except httpx.HTTPError:
                status = 0
            with self._lock:
                self.deliveries.append((request.request_id, str(webhook.get('status')), status, kid))
            if 200 <= status < 300:
                return status
            self._stopping.wait(min(2.0**attempt, 60.0) * self.time_scale)
        return status

    def file(self, request_id: str, n: int, ext: str) -> bytes | None:
        request = self.requests.get(request_id)
        if request is None or request.result is None or request.result[0] != 200:
            return None
        seed = f'{request_id}:{n}:{request.input.get("prompt")}'
        return (
            media.png(seed) if ext == 'png' else media.mp4(seed, seconds=int(str(request.input.get('duration') or 5)))
        )


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeFal
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(
        self, status: int, body: bytes, content_type: str = 'application/json', headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _authorized(self) -> bool:
        scheme, _, key = (self.headers.get('Authorization') or '').partition(' ')
        if scheme != 'Key' or key != self.server_fake.token:
            self._json(401, {'detail': 'Unauthorized: send Authorization: Key <your fal key>.'})
            return False
        return True

    def _request(self, path: str) -> tuple[FalRequest | None, str]:
        match = _REQUEST.match(path)
        if not match:
            return None, ''
        request = self.server_fake.requests.get(match.group(2))
        if request is None or request.app != match.group(1):
            return None, match.group(3) or ''
        return request, match.group(3) or ''

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == '/.well-known/jwks.json':
            return self._json(200, self.server_fake.jwks())
        file = _FILE.match(path)
        if file:
            data = self.server_fake.file(file.group(1), int(file.group(2)), file.group(3))
            if data is None:
                return self._json(404, {'detail': 'Not found'})
            return self._send(200, data, _CONTENT_TYPES[file.group(3)])
        if not self._authorized():
            return None
        request, action = self._request(path)
        if request is None or action == '/cancel':
            return self._json(404, {'detail': 'Request not found'})
        if action == '/status':
            return self._json(200, self.server_fake.status(request))
        if request.result is None:
            return self._json(400, {'detail': 'Request is still in progress'})
        status, body, headers = request.result
        return self._json(status, body, headers)

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get('Content-Length') or 0))
        if not self._authorized():
            return None
        request, action = self._request(urlsplit(self.path).path)
        if action != '/cancel':
            return self._json(405, {'detail': 'Method not allowed'})
        if request is None:
            return self._json(404, {'status': 'NOT_FOUND'})
        status, body = self.server_fake.cancel(request)
        return self._json(status, body)

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        parts = urlsplit(self.path)
        if parts.path == '/_fake/rotate-key':
            return self._json(200, {'kid': self.server_fake.rotate_key()})
        if not self._authorized():
            return None
        model_id = parts.path.strip('/')
        if (
            model_id.count('/') < 1
            or model_id.startswith(('files/', '_fake/', '.well-known/'))
            or '/requests/' in parts.path
        ):
            return self._json(404, {'detail': f'Application {model_id!r} not found'})
        try:
            body = json.loads(raw or b'{}')
        except ValueError:
            return self._json(422, {'detail': 'The body is not JSON.'})
        errors = input_errors(model_id, body)
        if errors:
            return self._json(422, {'detail': errors})
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        with self.server_fake._lock:
            self.server_fake.submits.append((model_id, headers, query, body))
        timeout = headers.get('x-fal-request-timeout')
        try:
            start_timeout = float(timeout) if timeout else None
        except ValueError:
            return self._json(422, {'detail': 'X-Fal-Request-Timeout must be a number of seconds.'})
        answer = self.server_fake.submit(model_id, body, query.get('fal_webhook', ''), start_timeout)
        return self._json(200, answer)


FakeFal.handler = _Handler
