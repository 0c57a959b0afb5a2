"""The mock provider: a small HTTP server that behaves like a real AI provider, for local runs and tests.

Its API is Cog's (Replicate's open-source prediction server), so the adapter is written like a real one:

- ``PUT /predictions/{id}`` ``{"model", "input", "webhook"?}`` starts a prediction, idempotently: the
  same id returns the existing prediction (200) instead of starting another (201 when new).
- ``GET /predictions/{id}``, ``POST /predictions/{id}/cancel``.
- ``GET /files/{id}/{n}.{ext}`` serves the outputs (a real PNG; MP4-shaped bytes for video).

Predictions run in threads and send Standard Webhooks signed with ``webhook_secret`` (HMAC-SHA256)
to ``webhook_url`` (or the ``webhook`` given on submit), retried a few times on failure. Each model
behaves deterministically (``time_scale`` shrinks every delay for fast tests):

======================  ==========================================================================
``image``               succeeds after ~1 s with ``num_images`` PNGs; one completion webhook
``video``               runs ~3 s, progress webhooks every quarter; produces half the requested
                        seconds, so it costs less than estimated
``fail``                fails after ~0.5 s with a provider error (not charged)
``slow``                runs until canceled (or 10 minutes); canceled while running = charged
``no-webhook``          succeeds after ~1 s and never sends a webhook
======================  ==========================================================================

``input.fail_submits = N`` makes the first N submits of a prediction answer 503 (to exercise retries).
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from atelier.providers.mock import media
from atelier.providers.signing import sign

MODELS = ('image', 'video', 'fail', 'slow', 'no-webhook')
_PREDICTION_PATH = re.compile(r'^/predictions/([A-Za-z0-9_-]{1,128})(/cancel)?$')
_FILE_PATH = re.compile(r'^/files/([A-Za-z0-9_-]{1,128})/(\d+)\.(png|mp4)$')
_CONTENT_TYPES = {'png': 'image/png', 'mp4': 'video/mp4'}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace('+00:00', 'Z')


class Prediction:
    def __init__(self, prediction_id: str, model: str, input: dict[str, Any], webhook: str) -> None:
        self.id = prediction_id
        self.model = model
        self.input = input
        self.webhook = webhook
        self.status = 'starting'
        self.progress = 0.0
        self.output: list[str] = []
        self.error: str | None = None
        self.charged = False
        self.metrics: dict[str, float] = {}
        self.created_at = _now()
        self.completed_at: str | None = None
        self.cancel = threading.Event()
        self.lock = threading.Lock()

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                'id': self.id,
                'model': self.model,
                'input': self.input,
                'status': self.status,
                'progress': self.progress,
                'output': list(self.output),
                'error': self.error,
                'charged': self.charged,
                'metrics': dict(self.metrics),
                'created_at': self.created_at,
                'completed_at': self.completed_at,
            }


class MockProviderServer:
    """The mock provider on ``host:port`` (port 0: a free one). ``start()`` returns its base URL."""

    def __init__(
        self,
        *,
        webhook_url: str,
        webhook_secret: str,
        host: str = '127.0.0.1',
        port: int = 0,
        time_scale: float = 1.0,
        webhook_attempts: int = 3,
    ) -> None:
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.host = host
        self.port = port
        self.time_scale = time_scale
        self.webhook_attempts = webhook_attempts
        self.url = ''
        self.predictions: dict[str, Prediction] = {}
        self.submit_attempts: dict[str, int] = {}
        #: Every webhook delivery attempt: (prediction id, status sent, HTTP status or 0 on no connection).
        self.deliveries: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._httpd: ThreadingHTTPServer | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        server = self

        class Handler(_Handler):
            provider = server

        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.url = f'http://{self.host}:{self._httpd.server_address[1]}'
        self._spawn(self._httpd.serve_forever, 0.05, name='mock-provider-http')
        return self.url

    def stop(self) -> None:
        self._stopping.set()
        for prediction in list(self.predictions.values()):
            prediction.cancel.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> MockProviderServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, target: Any, *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------------ API
    def submit(self, prediction_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        model, data = body.get('model'), body.get('input')
        if model not in MODELS or not isinstance(data, dict) or not isinstance(data.get('prompt'), str):
            return HTTPStatus.UNPROCESSABLE_ENTITY, {'detail': f'unknown model {model!r} or input without prompt'}
        with self._lock:
            existing = self.predictions.get(prediction_id)
            if existing is not None:
                return HTTPStatus.OK, existing.to_json()
            attempts = self.submit_attempts[prediction_id] = self.submit_attempts.get(prediction_id, 0) + 1
            if attempts <= int(data.get('fail_submits') or 0):
                return HTTPStatus.SERVICE_UNAVAILABLE, {'detail': 'temporarily overloaded, try again'}
            prediction = Prediction(prediction_id, model, data, str(body.get('webhook') or self.webhook_url))
            self.predictions[prediction_id] = prediction
        self._spawn(self._run, prediction, name=f'mock-prediction-{prediction_id}')
        return HTTPStatus.CREATED, prediction.to_json()

    def get(self, prediction_id: str) -> Prediction | None:
        with self._lock:
            return self.predictions.get(prediction_id)

    def cancel(self, prediction: Prediction) -> None:
        with prediction.lock:
            if prediction.status in {'starting', 'processing'}:
                prediction.cancel.set()

    # ------------------------------------------------------------------ running a prediction
    def _sleep(self, seconds: float, prediction: Prediction) -> bool:
        """Wait ``seconds`` (scaled); False if the prediction was canceled meanwhile."""
        return not prediction.cancel.wait(seconds * self.time_scale)

    def _run(self, p: Prediction) -> None:
        if not self._sleep(0.2, p):
            return self._finish(p, 'canceled', charged=False)
        with p.lock:
            p.status = 'processing'
        if p.model in {'image', 'no-webhook'}:
            if not self._sleep(0.8, p):
                return self._finish(p, 'canceled', charged=True)
            count = int(p.input.get('num_images') or 1)
            self._produce(p, [f'{self.url}/files/{p.id}/{n}.png' for n in range(count)], {'images': count})
            return self._finish(p, 'succeeded', webhook=p.model != 'no-webhook')
        if p.model == 'video':
            for step in range(1, 4):
                if not self._sleep(0.7, p):
                    return self._finish(p, 'canceled', charged=True)
                with p.lock:
                    p.progress = step / 4
                self._send_webhook(p)
            if not self._sleep(0.7, p):
                return self._finish(p, 'canceled', charged=True)
            seconds = max(1, int(p.input.get('duration_seconds') or 4) // 2)
            self._produce(p, [f'{self.url}/files/{p.id}/0.mp4'], {'video_seconds': seconds})
            return self._finish(p, 'succeeded')
        if p.model == 'fail':
            if not self._sleep(0.3, p):
                return self._finish(p, 'canceled', charged=True)
            return self._finish(p, 'failed', error='mock provider error: the model crashed', charged=False)
        # slow: runs until someone cancels it
        if not self._sleep(600, p):
            return self._finish(p, 'canceled', charged=True)
        self._produce(p, [f'{self.url}/files/{p.id}/0.png'], {'images': 1})
        return self._finish(p, 'succeeded')

    @staticmethod
    def _produce(p: Prediction, output: list[str], metrics: dict[str, float]) -> None:
        with p.lock:
            p.output = output
            p.metrics = metrics

    def _finish(
        self, p: Prediction, status: str, *, error: str | None = None, charged: bool = False, webhook: bool = True
    ) -> None:
        if self._stopping.is_set():
            return
        with p.lock:
            p.status = status
            p.error = error
            p.charged = charged
            p.progress = 1.0 if status == 'succeeded' else p.progress
            p.completed_at = _now()
        if webhook and p.model != 'no-webhook':
            self._send_webhook(p)

    def _send_webhook(self, p: Prediction) -> None:
        import httpx

        if not p.webhook:
            return
        payload = p.to_json()
        body = json.dumps(payload).encode()
        headers = {'Content-Type': 'application/json', **sign(self.webhook_secret, body)}
        for attempt in range(self.webhook_attempts):
            if self._stopping.is_set():
                return
            try:
                status = httpx.post(p.webhook, content=body, headers=headers, timeout=10).status_code
            except httpx.HTTPError:
                status = 0
            with self._lock:
                self.deliveries.append((p.id, payload['status'], status))
            if 200 <= status < 300:
                return
            if attempt + 1 < self.webhook_attempts:
                self._stopping.wait(0.5 * (attempt + 1) * self.time_scale)

    def file(self, prediction_id: str, n: int, ext: str) -> bytes | None:
        p = self.get(prediction_id)
        if p is None or p.status != 'succeeded' or n >= len(p.output) or not p.output[n].endswith(f'.{ext}'):
            return None
        seed = f'{p.id}:{n}:{p.input.get("prompt")}'
        if ext == 'png':
            return media.png(seed)
        return media.mp4(seed, seconds=int(p.metrics.get('video_seconds', 1)))


class _Handler(BaseHTTPRequestHandler):
    provider: MockProviderServer
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = 'application/json') -> None:
        self.send_response(status)
        self.send_header('Content-Type', content_type)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def _body(self) -> Any:
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        try:
            return json.loads(raw or b'{}')
        except ValueError:
            return None

    def do_GET(self) -> None:
        if self.path == '/health':
            return self._json(HTTPStatus.OK, {'status': 'ok'})
        match = _FILE_PATH.match(self.path)
        if match:
            data = self.provider.file(match.group(1), int(match.group(2)), match.group(3))
            if data is None:
                return self._json(HTTPStatus.NOT_FOUND, {'detail': 'no such file'})
            return self._send(HTTPStatus.OK, data, _CONTENT_TYPES[match.group(3)])
        match = _PREDICTION_PATH.match(self.path)
        prediction = self.provider.get(match.group(1)) if match and not match.group(2) else None
        if prediction is None:
            return self._json(HTTPStatus.NOT_FOUND, {'detail': 'no such prediction'})
        return self._json(HTTPStatus.OK, prediction.to_json())

    def do_PUT(self) -> None:
        match = _PREDICTION_PATH.match(self.path)
        body = self._body()
        if not match or match.group(2):
            return self._json(HTTPStatus.NOT_FOUND, {'detail': 'no such route'})
        if not isinstance(body, dict):
            return self._json(HTTPStatus.BAD_REQUEST, {'detail': 'body must be a JSON object'})
        status, payload = self.provider.submit(match.group(1), body)
        return self._json(status, payload)

    def do_POST(self) -> None:
        match = _PREDICTION_PATH.match(self.path)
        self._body()
        prediction = self.provider.get(match.group(1)) if match and match.group(2) else None
        if prediction is None:
            return self._json(HTTPStatus.NOT_FOUND, {'detail': 'no such prediction'})
        self.provider.cancel(prediction)
        # Cancel is asynchronous, as at real providers: the final status follows shortly (and by webhook).
        return self._json(HTTPStatus.OK, prediction.to_json())
