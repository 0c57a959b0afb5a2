"""A fake RevenueCat REST API v1 on 127.0.0.1: ``GET /v1/subscribers/{app_user_id}``, what the backfill reads.

    fake = FakeRevenueCatServer()        # host='127.0.0.1', port=0 (a free port)
    base = fake.start()                  # 'http://127.0.0.1:PORT' -> REVENUECAT_API_BASE / RevenueCatApiBase
    fake.set_subscriber('acc_1', {'subscriptions': {...}, 'non_subscriptions': {...}})
    fake.fail('acc_2', status=503)       # the next requests for acc_2 answer 503 (times=None: always)
    ...
    fake.requests                        # every request: method, path, app_user_id, headers
    fake.stop()

The response is RevenueCat's envelope ``{"request_date", "request_date_ms", "subscriber": {...}}``; the
subscriber object gets RevenueCat's defaults for what the test leaves out (``entitlements``,
``first_seen``, ``original_app_user_id``, ``subscriptions``, ``non_subscriptions``, ...). Like RevenueCat's
"get or create", an unknown app user id answers an empty subscriber. ``Authorization: Bearer <key>`` is
required (``api_key``: that exact key; None: any non-empty key); otherwise 401.

**Local-only endpoints** (not RevenueCat's; no key), for ``python -m infra.local trigger``: ``POST
/_local/events`` ``{"body": {"api_version": "1.0", "event": {...}}}`` remembers a webhook sent to the backend,
``GET /_local/app_users/{id}`` answers ``{"transactions": [...]}``, newest first: each store transaction
seen in a purchase (``transaction_id``, ``original_transaction_id``, ``product_id``, ``expiration_at_ms``,
``price``), and whether the latest refund report says ``refunded``, so a refund can default to the latest
purchase. ``GET /v1/subscribers`` does not change with them: set it with ``set_subscriber``. ``POST /_local/events``
takes ``Content-Type: application/json`` only (415 otherwise: another site's page cannot post it).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote, urlsplit

from infra.local.http_service import LocalHTTPService, is_json

LOCAL_API_KEY = 'rc_api_atelier_local'


class FakeRevenueCatServer(LocalHTTPService):
    thread_name = 'fake-revenuecat'

    def __init__(self, host: str = '127.0.0.1', port: int = 0, *, api_key: str | None = None) -> None:
        super().__init__(host, port)
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self._subscribers: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, tuple[int, int | None]] = {}
        self._transactions: dict[str, dict[str, Any]] = {}  # transaction id -> what the purchases said
        self._order = itertools.count(1)
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- test helpers
    def set_subscriber(self, app_user_id: str, subscriber: dict[str, Any]) -> None:
        """What ``GET /v1/subscribers/{app_user_id}`` answers from now on (the ``subscriber`` object)."""
        with self._lock:
            self._subscribers[app_user_id] = json.loads(json.dumps(subscriber))

    def fail(self, app_user_id: str, *, status: int = 503, times: int | None = 1) -> None:
        """The next ``times`` requests for ``app_user_id`` (None: all of them) answer ``status``."""
        with self._lock:
            self._failures[app_user_id] = (status, times)

    def record(self, body: dict[str, Any]) -> None:
        """Remember what a webhook sent to the backend says about its store transaction."""
        event: dict[str, Any] = body['event'] if isinstance(body.get('event'), dict) else {}
        kind, txn = str(event.get('type')), event.get('transaction_id')
        with self._lock:
            if kind == 'TRANSFER':
                self._transfer(event)
            elif not isinstance(txn, str) or not txn:
                return
            elif kind in PURCHASES:
                fields = {k: event.get(k) for k in _PURCHASE_FIELDS}
                found = self._transactions.setdefault(txn, {'refunded': False, 'seq': next(self._order)})
                found.update(fields)
            elif txn in self._transactions and (refunded := _refund_report(event)) is not None:
                self._transactions[txn]['refunded'] = refunded

    def transactions(self, app_user_id: str) -> list[dict[str, Any]]:
        """The store transactions of ``app_user_id`` seen in purchases, newest first."""
        with self._lock:
            found = [dict(t) for t in self._transactions.values() if t.get('app_user_id') == app_user_id]
        return sorted(found, key=lambda t: int(t['seq']), reverse=True)

    def _transfer(self, event: dict[str, Any]) -> None:
        sources, targets = event.get('transferred_from') or [], event.get('transferred_to') or []
        if targets:
            for transaction in self._transactions.values():
                if transaction.get('app_user_id') in sources:
                    transaction['app_user_id'] = targets[0]

    # ---------------------------------------------------------------- API
    def _subscriber(self, app_user_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            failure = self._failures.get(app_user_id)
            if failure is not None:
                status, times = failure
                if times is not None:
                    if times <= 1:
                        del self._failures[app_user_id]
                    else:
                        self._failures[app_user_id] = (status, times - 1)
                return status, {'message': 'Injected failure.'}
            given = json.loads(json.dumps(self._subscribers.get(app_user_id, {})))
        now = time.time()
        subscriber = {
            'entitlements': {},
            'first_seen': _iso(now),
            'last_seen': _iso(now),
            'management_url': None,
            'non_subscriptions': {},
            'original_app_user_id': app_user_id,
            'original_application_version': None,
            'original_purchase_date': None,
            'other_purchases': {},
            'subscriptions': {},
            **given,
        }
        return 200, {'request_date': _iso(now), 'request_date_ms': int(now * 1000), 'subscriber': subscriber}


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeRevenueCatServer
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_POST(self) -> None:
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        path = urlsplit(self.path).path
        if path != '/_local/events':
            self._json(404, {'message': f'Unrecognized request URL (POST: {path}).'})
            return
        if not is_json(self.headers):
            self._json(415, {'message': 'Expected Content-Type: application/json.'})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get('body'), dict):
            self._json(400, {'message': 'Expected {"body": {...}}.'})
            return
        self.server_fake.record(body['body'])
        self._json(200, {'recorded': True})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith('/_local/app_users/'):
            user = unquote(path.removeprefix('/_local/app_users/'))
            self._json(200, {'transactions': self.server_fake.transactions(user)})
            return
        prefix = '/v1/subscribers/'
        app_user_id = unquote(path.removeprefix(prefix)) if path.startswith(prefix) else None
        wanted = ('Authorization', 'X-Is-Sandbox', 'X-Platform', 'Accept')
        headers = {k: v for k, v in self.headers.items() if k in wanted}
        with self.server_fake._lock:
            self.server_fake.requests.append(
                {'method': 'GET', 'path': path, 'app_user_id': app_user_id, 'headers': headers}
            )
        if not self._authorized():
            return
        if app_user_id is None or not app_user_id or '/' in app_user_id:
            self._json(404, {'message': f'Unrecognized request URL (GET: {path}).'})
            return
        status, body = self.server_fake._subscriber(app_user_id)
        self._json(status, body)

    def _authorized(self) -> bool:
        scheme, _, key = (self.headers.get('Authorization') or '').partition(' ')
        expected = self.server_fake.api_key
        ok = scheme == 'Bearer' and bool(key) and (key == expected if expected else True)
        if not ok:
            self._json(401, {'message': 'Invalid API key.'})
        return ok

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)


PURCHASES = ('INITIAL_PURCHASE', 'RENEWAL', 'NON_RENEWING_PURCHASE')
_PURCHASE_FIELDS = (
    'app_user_id',
    'transaction_id',
    'original_transaction_id',
    'product_id',
    'purchased_at_ms',
    'expiration_at_ms',
    'price',
    'type',
)


def _refund_report(event: dict[str, Any]) -> bool | None:
    """True for a store refund (a ``CUSTOMER_SUPPORT`` cancellation), False for its reversal, else None."""
    if event.get('type') == 'REFUND_REVERSED':
        return False
    if event.get('type') == 'CANCELLATION' and event.get('cancel_reason') == 'CUSTOMER_SUPPORT':
        return True
    return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime('%Y-%m-%dT%H:%M:%SZ')


FakeRevenueCatServer.handler = _Handler
