"""A fake Stripe API on 127.0.0.1, enough for Checkout and the Events API: what the stripe SDK talks to offline.

    fake = FakeStripeServer()            # host='127.0.0.1', port=0 (a free port)
    base = fake.start()                  # 'http://127.0.0.1:PORT' -> STRIPE_API_BASE / StripeApiBase
    ...
    fake.sessions                        # every Checkout Session created, in order
    event = fake.completed_event(session_id)   # a checkout.session.completed event for it, to sign and post
    fake.add_event(event, delivered=False)     # what GET /v1/events lists (a webhook that never arrived)
    fake.pay(session_id)                 # the checkout page's Pay button: complete it, send the webhooks
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

``GET /v1/invoice_payments?invoice=in_...`` (optionally ``&status=paid``) lists the InvoicePayments of an
invoice the fake knows (every event it sent, logged or was told about; ``objects.add_invoice_payment`` for
more): how the backend learns which PaymentIntent paid an invoice, since webhooks do not carry it. An
invoice it never heard of is a 404 ``resource_missing``. ``unavailable`` (a set of paths) makes those
answer 500, as an outage would.

**Paying, as Stripe's test mode does.** The hosted page at the session's ``url`` has a Pay button: its form
POST completes the session and sends the signed webhooks a real payment causes to ``webhook_url`` (the
offline stack's ``/webhooks/stripe``, wired by :class:`infra.local.server.LocalServer`), signed with
``webhook_secret``: ``checkout.session.completed``, and for a subscription also
``customer.subscription.created`` and the first ``invoice.paid`` (which grants the period's credits). Then
it shows what the endpoint answered and a link to the session's ``success_url``. A paid session is not paid
again. Every event sent is logged for the Events API, delivered or not (a failed delivery is what the
backfill finds).

**Local-only endpoints** (not Stripe's; no key), for ``python -m infra.local trigger``:
``POST /_local/events`` ``{"event": {...}, "delivered": true}`` logs an event sent by someone else and
remembers what it says (:class:`infra.local.stripe_objects.StripeObjects`); ``GET /_local/accounts/{id}``
answers the account's customer, payments (PaymentIntent, charge, amount, refunded, disputes),
subscriptions and checkout sessions, newest first, so a refund can default to the latest payment.
``POST /_local/events`` takes ``Content-Type: application/json`` only (415 otherwise), and the Pay button's
form POST only from the fake's own checkout page (a browser's ``Origin``; 403 otherwise): a page of another
site open in the same browser cannot post either to 127.0.0.1 (:mod:`infra.local.http_service`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import html
import json
import operator
import secrets
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from infra.local.http_service import LocalHTTPService, is_json, same_origin
from infra.local.payment_events import (
    DAY,
    STRIPE_SECRET,
    Delivery,
    customer_id,
    invoice,
    send_stripe_event,
    stripe_event,
    subscription_object,
)
from infra.local.stripe_objects import StripeObjects


class FakeStripeServer(LocalHTTPService):
    thread_name = 'fake-stripe'

    def __init__(
        self,
        host: str = '127.0.0.1',
        port: int = 0,
        *,
        api_key: str | None = None,
        prices: dict[str, tuple[int, str]] | None = None,
        webhook_url: str | None = None,
        webhook_secret: str = STRIPE_SECRET,
    ) -> None:
        super().__init__(host, port)
        self.api_key = api_key  # None: any sk_test_/sk_live_ key is accepted
        self.prices = _catalog_prices() if prices is None else dict(prices)
        self.webhook_url = webhook_url  # where the Pay button's events go (None: nowhere; logged undelivered)
        self.webhook_secret = webhook_secret
        self.objects = StripeObjects()
        self.sessions: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # {'event': ..., 'delivered': bool}, in the order added
        self.page_size: int | None = None
        self.unavailable: set[str] = set()  # API paths that answer 500 (an outage)
        self._by_id: dict[str, dict[str, Any]] = {}
        self._params: dict[str, dict[str, Any]] = {}  # what each session was created with (line items, metadata)
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
        session = _completed(self.session(session_id), payment_status)
        return stripe_event(event_type, session, created=int(time.time()), event_id=f'evt_{secrets.token_hex(12)}')

    def add_event(self, event: dict[str, Any], *, delivered: bool = False) -> dict[str, Any]:
        """Make ``event`` part of the account's event log (``delivered``: every webhook endpoint got it) and
        remember its objects. An event already logged (same id) is updated, not logged twice."""
        self.objects.record(event)
        with self._lock:
            logged = next((item for item in self.events if item['event'].get('id') == event.get('id')), None)
            if logged is None:
                self.events.append({'event': json.loads(json.dumps(event)), 'delivered': delivered})
            else:
                logged.update(event=json.loads(json.dumps(event)), delivered=delivered)
        return event

    def record(self, event: dict[str, Any], *, delivered: bool) -> None:
        """An event that was sent to the webhook: logged for the Events API, and its objects remembered."""
        self.add_event(event, delivered=delivered)

    # ---------------------------------------------------------------- the checkout page's Pay button
    def pay(self, session_id: str) -> list[tuple[dict[str, Any], Delivery]]:
        """Complete an open session as a successful payment and send its webhooks (none for a session not open).

        Raises ``KeyError`` for an unknown session. Answers each event sent with what the endpoint said.
        """
        with self._lock:
            stored = self._by_id[session_id]
            if stored['status'] != 'open':
                return []
            stored.update(_completed(json.loads(json.dumps(stored)), 'paid'))
            session = json.loads(json.dumps(stored))
            params = json.loads(json.dumps(self._params.get(session_id, {})))
        now = int(time.time())
        events = [stripe_event('checkout.session.completed', session, created=now)]
        if session['mode'] == 'subscription':
            events += _first_period_events(session, params, now)
        return [(event, self._deliver(event)) for event in events]

    def _deliver(self, event: dict[str, Any]) -> Delivery:
        self.record(event, delivered=False)  # Stripe knows its objects before the endpoint asks about them
        if not self.webhook_url:
            delivery = Delivery(status=0, body='no webhook endpoint is configured')
        else:
            delivery = send_stripe_event(self.webhook_url, event, secret=self.webhook_secret)
        self.record(event, delivered=delivery.ok)
        return delivery

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

    def _list_invoice_payments(self, query: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        invoice_id = query.get('invoice')
        if not isinstance(invoice_id, str) or not invoice_id:
            return 400, _error('invalid_request_error', 'Missing required param: invoice.', param='invoice')
        payments = self.objects.invoice_payments(invoice_id)
        if payments is None:
            return 404, _error('resource_missing', f"No such invoice: '{invoice_id}'", param='invoice')
        status = query.get('status')
        listed = [p for p in payments if not status or p.get('status') == status]
        return 200, {'object': 'list', 'data': listed, 'has_more': False, 'url': '/v1/invoice_payments'}

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
        self._params[session_id] = params
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
        path = urlsplit(self.path).path
        if path.startswith('/c/pay/'):
            if not same_origin(self.headers, self.server_fake.base_url):  # only the session's own page pays it
                self._html(403, '<!doctype html><title>Forbidden</title><p>Pay from the checkout page itself.</p>')
                return
            self._pay(path.removeprefix('/c/pay/'))
            return
        if path == '/_local/events':
            if not is_json(self.headers):
                self._json(415, _error('invalid_request_error', 'Expected Content-Type: application/json.'))
                return
            self._record_event(raw)
            return
        params = decode_form(raw)
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
        if path.startswith('/_local/accounts/'):
            account_id = unquote(path.removeprefix('/_local/accounts/'))
            self._json(200, self.server_fake.objects.account(account_id))
            return
        query = decode_form(urlsplit(self.path).query)
        self._record('GET', path, query)
        if not self._authorized():
            return
        if path in self.server_fake.unavailable:
            self._json(500, {'error': {'type': 'api_error', 'message': 'An unknown error occurred (fake outage).'}})
            return
        if path == '/v1/invoice_payments':
            status, body = self.server_fake._list_invoice_payments(query)
            self._json(status, body)
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
        self._html(status, _checkout_page(session if status == 200 else None))

    def _pay(self, session_id: str) -> None:
        try:
            sent = self.server_fake.pay(session_id)
        except KeyError:
            self._html(404, _checkout_page(None))
            return
        self._html(200, _paid_page(self.server_fake.session(session_id), sent))

    def _record_event(self, raw: str) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        event = body.get('event') if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(event, dict) or not isinstance(event.get('id'), str):
            self._json(400, _error('invalid_request_error', 'Expected {"event": {...}, "delivered": bool}.'))
            return
        self.server_fake.record(event, delivered=bool(body.get('delivered', True)))
        self._json(200, {'recorded': event['id']})

    def _html(self, status: int, page: str) -> None:
        text = page.encode()
        self.send_response(int(HTTPStatus(status)))
        self.send_header('Content-Type', 'text/html; charset=utf-8')
        self.send_header('Content-Length', str(len(text)))
        self.end_headers()
        self.wfile.write(text)


def _completed(session: dict[str, Any], payment_status: str) -> dict[str, Any]:
    """``session`` as Stripe shows it once the customer paid: its PaymentIntent or subscription, and a customer."""
    suffix = str(session['id']).removeprefix('cs_test_')[:24]
    session.update(status='complete', payment_status=payment_status)
    if session['mode'] == 'payment':
        session['payment_intent'] = f'pi_{suffix}'
    else:
        session['subscription'] = f'sub_{suffix}'
    session['customer'] = customer_id(str(session['client_reference_id']))
    return session


def _first_period_events(session: dict[str, Any], params: dict[str, Any], now: int) -> list[dict[str, Any]]:
    """What Stripe sends after a subscription checkout: the subscription, then its first invoice, paid."""
    metadata = (params.get('subscription_data') or {}).get('metadata') or session.get('metadata') or {}
    account_id = metadata.get('account_id') or session.get('client_reference_id')
    price = str(((params.get('line_items') or [{}])[0] or {}).get('price'))
    subscription_id, customer = str(session['subscription']), str(session['customer'])
    period_end = now + 30 * DAY
    subscription = subscription_object(
        account_id, subscription_id=subscription_id, price=price, period_end=period_end, customer=customer
    )
    paid = invoice(
        account_id,
        subscription=subscription_id,
        amount_paid=int(session.get('amount_total') or 0),
        price=price,
        period_start=now,
        period_end=period_end,
        customer=customer,
    )
    return [
        stripe_event('customer.subscription.created', subscription, created=now),
        stripe_event('invoice.paid', paid, created=now),
    ]


def _checkout_page(session: dict[str, Any] | None) -> str:
    if session is None:
        return '<!doctype html><title>Not found</title><p>No such session.</p>'
    sid, mode = html.escape(str(session['id'])), html.escape(str(session.get('mode')))
    amount = f'{int(session.get("amount_total") or 0) / 100:.2f} {html.escape(str(session.get("currency")).upper())}'
    metadata = session.get('metadata') or {}
    what = html.escape(str(metadata.get('pack_id') or metadata.get('plan_id')))
    head = (
        f'<!doctype html><title>Fake Stripe Checkout</title><h1>Fake Stripe Checkout</h1>'
        f'<p>Session {sid}: {mode} of <b>{what}</b> for {amount}. Nothing is charged here.</p>'
    )
    if session.get('status') != 'open':
        return head + f'<p>This session is {html.escape(str(session.get("status")))}: it was paid already.</p>'
    cancel = html.escape(str(session.get('cancel_url') or ''))
    return head + (
        f'<form method="post" action="/c/pay/{sid}"><button type="submit">Pay {amount}</button></form>'
        + (f'<p><a href="{cancel}">Cancel</a></p>' if cancel else '')
    )


def _paid_page(session: dict[str, Any], sent: list[tuple[dict[str, Any], Delivery]]) -> str:
    sid = html.escape(str(session['id']))
    if not sent:
        return f'<!doctype html><title>Already paid</title><p>Session {sid} was paid already; nothing sent again.</p>'
    rows = ''.join(
        f'<li>{html.escape(str(event["type"]))} {html.escape(str(event["id"]))}: '
        f'HTTP {delivery.status} <code>{html.escape(delivery.body[:300])}</code></li>'
        for event, delivery in sent
    )
    success = html.escape(str(session.get('success_url') or '').replace('{CHECKOUT_SESSION_ID}', str(session['id'])))
    return (
        f'<!doctype html><title>Payment succeeded</title><h1>Payment succeeded</h1>'
        f'<p>Session {sid} is paid. Webhooks sent:</p><ul>{rows}</ul>'
        + (f'<p><a href="{success}">Continue</a> (the session\'s success_url)</p>' if success else '')
    )


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
