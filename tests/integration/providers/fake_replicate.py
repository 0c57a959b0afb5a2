"""A small fake of Replicate's HTTP API on 127.0.0.1, driven by the test.

Serves ``POST /v1/predictions`` (with ``version``), ``POST /v1/models/{owner}/{name}/predictions``,
``GET /v1/predictions/{id}``, ``POST /v1/predictions/{id}/cancel`` and ``GET /v1/predictions``
(newest first, ``created_after``, ``page_size`` per page with a ``next`` URL), behind a bearer token.
Predictions stay ``starting`` until the test calls :meth:`FakeReplicate.finish` (or ``advance``), which
also sends the webhook, signed like Replicate's (Standard Webhooks with the ``whsec_`` secret).

``create_answers`` scripts the next creates: an HTTP status to answer *instead of* creating
(``503``), ``'create+500'`` / ``'create+hang'`` to create the prediction and then answer 500 or hang
past the client's timeout (the outcomes a client cannot tell apart from "nothing was created").
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from atelier.providers.signing import sign

TOKEN = 'r8_atelier_test'
WEBHOOK_SECRET = 'whsec_cmVwbGljYXRlX2F0ZWxpZXJfdGVzdA=='  # base64('replicate_atelier_test')
_PREDICTION = re.compile(r'^/v1/predictions/([a-z0-9]+)(/cancel)?$')
_MODEL = re.compile(r'^/v1/models/([\w.-]+)/([\w.-]+)/predictions$')


def _now() -> str:
    return datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


class FakeReplicate:
    def __init__(self, *, page_size: int = 100, hang_seconds: float = 2.0) -> None:
        self.page_size = page_size
        self.hang_seconds = hang_seconds
        self.url = ''
        self.predictions: dict[str, dict[str, Any]] = {}
        #: Every create request that reached the server: (path, headers (lower-case), JSON body).
        self.creates: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.create_answers: list[int | str] = []
        #: Model version -> ``owner/name`` (what ``model`` says on a prediction created by version).
        self.versions: dict[str, str] = {}
        #: Every webhook delivery: (prediction id, status, HTTP status or 0).
        self.deliveries: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> str:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f'http://127.0.0.1:{self._httpd.server_address[1]}'
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # ------------------------------------------------------------------ the test's controls
    def create(self, path: str, headers: dict[str, str], body: dict[str, Any], model: str | None) -> dict[str, Any]:
        prediction_id = secrets.token_hex(13)
        prediction = {
            'id': prediction_id,
            'model': model,
            'version': body.get('version') or 'hidden',
            'input': body.get('input') or {},
            'logs': '',
            'output': None,
            'data_removed': False,
            'error': None,
            'status': 'starting',
            'created_at': _now(),
            'started_at': None,
            'completed_at': None,
            'urls': {
                'get': f'{self.url}/v1/predictions/{prediction_id}',
                'cancel': f'{self.url}/v1/predictions/{prediction_id}/cancel',
            },
            'metrics': {},
        }
        if body.get('webhook'):
            prediction['webhook'] = body['webhook']
            prediction['webhook_events_filter'] = body.get('webhook_events_filter') or ['output', 'completed']
        with self._lock:
            self.predictions[prediction_id] = prediction
        return prediction

    def finish(
        self,
        prediction_id: str,
        status: str = 'succeeded',
        *,
        output: Any = None,
        error: str | None = None,
        predict_time: float | None = 1.5,
        webhook: bool = True,
    ) -> dict[str, Any]:
        with self._lock:
            p = self.predictions[prediction_id]
            p.update(status=status, output=output, error=error, completed_at=_now())
            if predict_time is not None:
                p['metrics'] = {'predict_time': predict_time}
            snapshot = dict(p)
        if webhook:
            self.send_webhook(snapshot)
        return snapshot

    def advance(self, prediction_id: str, status: str = 'processing') -> None:
        with self._lock:
            self.predictions[prediction_id].update(status=status, started_at=_now())

    def send_webhook(self, prediction: dict[str, Any]) -> int:
        if not prediction.get('webhook'):
            return 0
        body = json.dumps(prediction).encode()
        headers = {'Content-Type': 'application/json', **sign(WEBHOOK_SECRET, body)}
        try:
            status = httpx.post(prediction['webhook'], content=body, headers=headers, timeout=5).status_code
        except httpx.HTTPError:
            status = 0
        self.deliveries.append((prediction['id'], prediction['status'], status))
        return status

    def only(self) -> dict[str, Any]:
        assert len(self.predictions) == 1, self.predictions
        return next(iter(self.predictions.values()))


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeReplicate
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        length = int(self.headers.get('Content-Length') or 0)
        try:
            return json.loads(self.rfile.read(length) or b'{}')
        except ValueError:
            return None

    def _authorized(self) -> bool:
        if self.headers.get('Authorization') != f'Bearer {TOKEN}':
            self._json(HTTPStatus.UNAUTHORIZED, {'title': 'Unauthenticated', 'status': 401})
            return False
        return True

    def do_GET(self) -> None:
        if not self._authorized():
            return
        fake = self.server_fake
        parts = urlsplit(self.path)
        if parts.path == '/v1/predictions':
            query = parse_qs(parts.query)
            after = query.get('created_after', [''])[0]
            offset = int(query.get('offset', ['0'])[0])
            with fake._lock:
                listed = sorted(fake.predictions.values(), key=lambda p: p['created_at'], reverse=True)
            listed = [p for p in listed if p['created_at'] > after]
            page = listed[offset : offset + fake.page_size]
            more = offset + fake.page_size < len(listed)
            next_query = urlencode({'created_after': after, 'offset': offset + fake.page_size})
            following = f'{fake.url}/v1/predictions?{next_query}'
            return self._json(HTTPStatus.OK, {'results': page, 'next': following if more else None, 'previous': None})
        match = _PREDICTION.match(parts.path)
        prediction = fake.predictions.get(match.group(1)) if match and not match.group(2) else None
        if prediction is None:
            return self._json(HTTPStatus.NOT_FOUND, {'title': 'Not found', 'status': 404})
        return self._json(HTTPStatus.OK, prediction)

    def do_POST(self) -> None:
        body = self._body()
        if not self._authorized():
            return
        fake = self.server_fake
        match = _PREDICTION.match(self.path)
        if match and match.group(2):
            prediction = fake.predictions.get(match.group(1))
            if prediction is None:
                return self._json(HTTPStatus.NOT_FOUND, {'title': 'Not found', 'status': 404})
            if prediction['status'] in {'starting', 'processing'}:
                ran = 0.0 if prediction['status'] == 'starting' else 0.8
                fake.finish(prediction['id'], 'canceled', predict_time=ran)
            return self._json(HTTPStatus.OK, fake.predictions[prediction['id']])
        model = _MODEL.match(self.path)
        if self.path != '/v1/predictions' and model is None:
            return self._json(HTTPStatus.NOT_FOUND, {'title': 'Not found', 'status': 404})
        if not isinstance(body, dict) or not isinstance(body.get('input'), dict):
            return self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {'title': 'Invalid input', 'status': 422})
        if self.path == '/v1/predictions' and not body.get('version'):
            return self._json(HTTPStatus.UNPROCESSABLE_ENTITY, {'title': 'version is required', 'status': 422})
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake.creates.append((self.path, headers, body))
        answer = fake.create_answers.pop(0) if fake.create_answers else 'create'
        if isinstance(answer, int):
            return self._json(answer, {'title': 'scripted answer', 'status': answer})
        name = f'{model.group(1)}/{model.group(2)}' if model else fake.versions.get(str(body.get('version')))
        prediction = fake.create(self.path, headers, body, name)
        if answer == 'create+500':
            return self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {'title': 'Internal error', 'status': 500})
        if answer == 'create+hang':
            time.sleep(fake.hang_seconds)
        return self._json(HTTPStatus.CREATED, prediction)
