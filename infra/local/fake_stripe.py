"""A fake Stripe API on 127.0.0.1, enough for Checkout and the Events API: what the stripe SDK talks to offline.

    fake = FakeStripeServer()            # host='127.0.0.1', port=0 (a free port)
    base = fake.start()                  # 'http://127.0.0.1:PORT' -> STRIPE_API_BASE / StripeApiBase
    ...
    fake.sessions                        # every Checkout Session created, in order
    event = fake.completed_event(session_id)   # a checkout.session.completed event for it, to sign and post
    fake.add_event(event, delivered=False)     # what GET /v1/events lists (a webhook that never arrived)
    fake.stop()

It speaks the real wire format: form-encoded ``POST /v1/checkout/sessions`` (nested ``a[b][0][c]=`` keys),
``Authorization: Bearer sk_...``, ``Idempotency-Key`` replays (same key and parameters -> the same session,
``Idempotent-Replayed: true``; same key, other parameters -> 400 ``idempotency_error``), Stripe's error
envelope, ``GET /v1/checkout/sessions/{id}``, and a hosted page at the session's ``url``. Prices it knows
(``prices``: id -> (amount, currency); by default the test prices of the commerce catalog) fill
``amount_total``; an unknown price is refused like Stripe does.

``GET /v1/events`` lists the events a test added (``add_event``), newest first (by ``created``, then the
latest added), with Stripe's filters ``delivery_success`` (``false``: events not delivered to every
endpoint), ``created[gt|gte|lt|lte]`` (or ``created=<ts>``), ``type`` (``*`` wildcards) and ``types[]``,
and cursor pagination (``limit`` 1..100, default 10; ``starting_after`` / ``ending_before``; ``has_more``).
``GET /v1/events/{id}`` returns one. ``page_size`` caps every page, to exercise pagination with few events.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import operator
import secrets
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from infra.local.http_service import LocalHTTPService


class FakeStripeServer(LocalHTTPService):
    thread_name = 'fake-stripe'

    def __init__(
        self,
        host: str = '127.0.0.1',
        port: int = 0,
        *,
        api_key: str | None = None,
        prices: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key  # None: any sk_test_/sk_live_ key is accepted
        self.prices = _catalog_prices() if prices is None else dict(prices)
        self.sessions: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # {'event': ..., 'delivered': bool}, in the order added
        self.page_size: int | None = None
        self._by_id: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- test helpers
    def session(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._by_id[session_id]))  # type: ignore[no-any-return]

    def completed_event(
        self, session_id: str, *, payment_status: str = 'paid', event_type: str = 'checkout.session.completed'
    ) -> dict[str, Any]:
        """A Stripe event for a created session, as if the customer paid (sign it and post it to the webhook)."""
        session = self.session(session_id)
        session.update(status='complete', payment_status=payment_status)
        if session['mode'] == 'payment':
            session['payment_intent'] = f'pi_{session_id.removeprefix("cs_test_")[:24]}'
        else:
            session['subscription'] = f'sub_{session_id.removeprefix("cs_test_")[:24]}'
        session['customer'] = f'cus_{hashlib.sha256(str(session["client_reference_id"]).encode()).hexdigest()[:14]}'
        return {
            'id': f'evt_{secrets.token_hex(12)}',
            'object': 'event',
            'api_version': '2026-10-28.endive',
            'created': int(time.time()),
            'livemode': False,
            'pending_webhooks': 1,
            'type': event_type,
            'data': {'object': session},
        }

    def add_event(self, event: dict[str, Any], *, delivered: bool = False) -> dict[str, Any]:
        """Make ``event`` part of the account's event log (``delivered``: every webhook endpoint got it)."""
        with self._lock:
            self.events.append({'event': json.loads(json.dumps(event)), 'delivered': delivered})
        return event

    # ---------------------------------------------------------------- API
    def _list_events(self, query: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        try:
            limit = int(query.get('limit', 10))
        except ValueError:
            return 400, _error('invalid_request_error', 'Invalid integer: limit', param='limit')
        if not 1 <= limit <= 100:
            return 400, _error('invalid_request_error', 'limit must be between 1 and 100.', param='limit')
        if self.page_size:
            limit = min(limit, self.page_size)
        with self._lock:
            ordered = list(enumerate(self.events))
        ordered.sort(key=lambda pair: (pair[1]['event'].get('created', 0), pair[0]), reverse=True)
        log = [item for _, item in ordered]
        ids = [item['event'].get('id') for item in log]
        for cursor in ('starting_after', 'ending_before'):
            if query.get(cursor) and query[cursor] not in ids:
                return 400, _error('resource_missing', f"No such event: '{query[cursor]}'", param=cursor)
        if query.get('starting_after'):
            log = log[ids.index(query['starting_after']) + 1 :]
        elif query.get('ending_before'):
            log = log[: ids.index(query['ending_before'])]
        events = [item['event'] for item in log if _event_matches(item, query)]
        backwards = bool(query.get('ending_before')) and not query.get('starting_after')
        page = events[-limit:] if backwards else events[:limit]
        has_more = len(events) > limit
        return 200, {'object': 'list', 'data': page, 'has_more': has_more, 'url': '/v1/events'}

    def _get_event(self, event_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            found = next((item['event'] for item in self.events if item['event'].get('id') == event_id), None)
        if found is None:
            return 404, _error('resource_missing', f"No such event: '{event_id}'")
        return 200, found

    def _create_session(self, params: dict[str, Any], idempotency_key: str | None) -> tuple[int, dict[str, Any]]:
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
        with self._lock:
            if idempotency_key and idempotency_key in self._idempotent:
                seen_digest, status, body = self._idempotent[idempotency_key]
                if seen_digest != digest:
                    return 400, _error(
                        'idempotency_error',
                        'Keys for idempotent requests can only be used with the same parameters they were first used '
                        'with.',
                    )
                return status, {**body, '_replayed': True}
            status, body = self._new_session(params)
            if idempotency_key:
                self._idempotent[idempotency_key] = (digest, status, body)
            return status, body

    def _new_session(self, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        mode = params.get('mode')
        if mode not in ('payment', 'subscription', 'setup'):
            return 400, _error('invalid_request_error', 'Missing required param: mode.', param='mode')
        if not params.get('success_url') and params.get('ui_mode') != 'embedded':
            return 400, _error('invalid_request_error', 'Missing required param: success_url.', param='success_url')
        line_items = params.get('line_items') or []
        if not isinstance(line_items, list) or not line_items:
            return 400, _error('invalid_request_error', 'Missing required param: line_items.', param='line_items')
        total, currency = 0, None
        for item in line_items:
            price = item.get('price') if isinstance(item, dict) else None
            if self.prices and price not in self.prices:
                return 400, _error('resource_missing', f"No such price: '{price}'", param='line_items[0][price]')
            amount, currency = self.prices.get(str(price), (0, 'usd'))
            total += amount * int(item.get('quantity', 1))
        session_id = f'cs_test_{secrets.token_hex(16)}'
        now = int(time.time())
        session: dict[str, Any] = {
            'id': session_id,
            'object': 'checkout.session',
            'mode': mode,
            'status': 'open',
            'payment_status': 'unpaid',
            'client_reference_id': params.get('client_reference_id'),
            'metadata': params.get('metadata') or {},
            'customer': params.get('customer'),
            'customer_email': params.get('customer_email'),
            'payment_intent': None,
            'subscription': None,
            'invoice': None,
            'amount_subtotal': total,
            'amount_total': total,
            'currency': currency,
            'livemode': False,
            'success_url': params.get('success_url'),
            'cancel_url': params.get('cancel_url'),
            'created': now,
            'expires_at': now + 24 * 3600,
            'url': f'{self.base_url}/c/pay/{session_id}',
        }
        self.sessions.append(session)
        self._by_id[session_id] = session
        return 200, session

    def _get_session(self, session_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            session = self._by_id.get(session_id)
        if session is None:
            return 404, _error('resource_missing', f"No such checkout.session: '{session_id}'")
        return 200, session


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeStripeServer
    protocol_version = 'HTTP/1.1'

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_POST(self) -> None:
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length).decode('utf-8') if length else ''
        params = decode_form(raw)
        path = urlsplit(self.path).path
        self._record('POST', path, params)
        if not self._authorized():
            return
        if path == '/v1/checkout/sessions':
            status, body = self.server_fake._create_session(params, self.headers.get('Idempotency-Key'))
            self._json(status, body)
            return
        self._json(404, _error('invalid_request_error', f'Unrecognized request URL (POST: {path}).'))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path.startswith('/c/pay/'):
            self._page(path.removeprefix('/c/pay/'))
            return
        query = decode_form(urlsplit(self.path).query)
        self._record('GET', path, query)
        if not self._authorized():
            return
        if path == '/v1/events':
            status, body = self.server_fake._list_events(query)
            self._json(status, body)
            return
        if path.startswith('/v1/events/'):
            status, body = self.server_fake._get_event(path.rsplit('/', 1)[-1])
            self._json(status, body)
            return
        if path.startswith('/v1/checkout/sessions/'):
            status, body = self.server_fake._get_session(path.rsplit('/', 1)[-1])
            self._json(status, body)
            return
        self._json(404, _error('invalid_request_error', f'Unrecognized request URL (GET: {path}).'))

    def _record(self, method: str, path: str, params: dict[str, Any]) -> None:
        wanted = ('Idempotency-Key', 'Stripe-Version', 'Content-Type', 'User-Agent')
        headers = {k: v for k, v in self.headers.items() if k in wanted}
        with self.server_fake._lock:
            self.server_fake.requests.append({'method': method, 'path': path, 'params': params, 'headers': headers})

    def _authorized(self) -> bool:
        scheme, _, key = (self.headers.get('Authorization') or '').partition(' ')
        expected = self.server_fake.api_key
        ok = scheme == 'Bearer' and (key == expected if expected else key.startswith(('sk_test_', 'sk_live_')))
        if not ok:
            self._json(401, _error('invalid_request_error', 'Invalid API Key provided.'))
        return ok

    def _json(self, status: int, body: dict[str, Any]) -> None:
        replayed = bool(body.pop('_replayed', False)) if isinstance(body, dict) else False
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.send_header('Request-Id', f'req_{secrets.token_hex(7)}')
        if replayed:
            self.send_header('Idempotent-Replayed', 'true')
        self.end_headers()
        self.wfile.write(data)

    def _page(self, session_id: str) -> None:
        status, session = self.server_fake._get_session(session_id)
        text = (
            f'<!doctype html><title>Fake Stripe Checkout</title><h1>Fake Stripe Checkout</h1>'
            f'<p>Session {session_id}: {session.get("mode")} for {session.get("amount_total")} '
            f'{session.get("currency")}. Nothing is charged here.</p>'
            if status == 200
            else '<!doctype html><title>Not found</title><p>No such session.</p>'
        ).encode()
        self.send_response(int(HTTPStatus.OK) if status == 200 else int(HTTPStatus.NOT_FOUND))
        self.send_header('Content-Type', 'text/html; charset=utf-8')
        self.send_header('Content-Length', str(len(text)))
        self.end_headers()
        self.wfile.write(text)


def decode_form(raw: str) -> dict[str, Any]:
    """Stripe's form encoding (``a[b][0][c]=v``) back into nested dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        parts = [key.split('[', 1)[0]] + [p.rstrip(']') for p in key.split('[')[1:]]
        node: Any = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt: Any = value if last else ([] if parts[i + 1].isdigit() else {})
            if isinstance(node, list):
                index = int(part)
                while len(node) <= index:
                    node.append(None)
                if node[index] is None or last:
                    node[index] = nxt
                node = node[index]
            else:
                if part not in node or last:
                    node[part] = nxt
                node = node[part]
    return root


def _event_matches(item: dict[str, Any], query: dict[str, Any]) -> bool:
    """Stripe's list filters for events: ``delivery_success``, ``created``, ``type`` and ``types[]``."""
    event = item['event']
    delivery = query.get('delivery_success')
    if delivery in ('true', 'false') and item['delivered'] != (delivery == 'true'):
        return False
    created = int(event.get('created') or 0)
    bounds = query.get('created')
    if isinstance(bounds, dict):
        compare = {'gt': operator.gt, 'gte': operator.ge, 'lt': operator.lt, 'lte': operator.le}
        if not all(compare[op](created, int(raw)) for op, raw in bounds.items() if op in compare):
            return False
    elif isinstance(bounds, str) and bounds and created != int(bounds):
        return False
    kind = str(event.get('type'))
    if isinstance(query.get('type'), str) and not fnmatch.fnmatchcase(kind, query['type']):
        return False
    types = query.get('types')
    return not (isinstance(types, list) and types and kind not in types)


def _error(kind: str, message: str, *, param: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {'type': 'invalid_request_error', 'message': message}
    if kind != 'invalid_request_error':
        error['code'] = kind
    if param:
        error['param'] = param
    return {'error': error}


def _catalog_prices() -> dict[str, tuple[int, str]]:
    """Test-mode prices of the commerce catalog, when the atelier package is importable."""
    try:
        from atelier.payments.catalog import load_commerce_catalog
    except ImportError:
        return {}
    catalog = load_commerce_catalog()
    prices = {p.stripe_prices.test: (p.amount, p.currency) for p in catalog.packs}
    prices.update(
        {p.stripe_prices.test: (p.amount or 0, p.currency) for p in catalog.plans if p.stripe_prices is not None}
    )
    return prices


FakeStripeServer.handler = _Handler
