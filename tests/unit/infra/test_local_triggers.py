"""``python -m infra.local``: serving stays the default command; ``trigger`` parses every event the backend handles
and builds follow-up events from what the fake providers know (no stack needed here)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from typing import Any

import httpx
import pytest

from atelier.payments.catalog import load_commerce_catalog
from atelier.payments.revenuecat_events import RevenueCatEvents
from atelier.payments.stripe_events import StripeEvents
from atelier.payments.stripe_gateway import verify_event
from infra.local.__main__ import build_parser
from infra.local.fake_revenuecat import FakeRevenueCatServer
from infra.local.fake_stripe import FakeStripeServer
from infra.local.payment_events import STRIPE_SECRET
from infra.local.stripe_objects import StripeObjects
from infra.local.triggers import TRIGGERS
from infra.local.triggers.spec import Request, Trigger, TriggerError

CATALOG = load_commerce_catalog()


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def build(provider: str, event: str, *options: str, known: dict[str, Any] | None = None) -> dict[str, Any]:
    args = parse('trigger', provider, event, '--account', 'acc_1', *options)
    request = Request('acc_1', args, known or {}, CATALOG, int(time.time()))
    spec: Trigger = args.trigger
    return spec.build(request)


# ---------------------------------------------------------------- the command line


def test_serving_is_still_the_default_command():
    assert (parse().command, parse().port, parse().welcome_credits, parse().parameter_overrides) == (
        None,
        3000,
        100,
        [],
    )
    given = parse('--port', '8080', '--parameter-overrides', 'LogLevel=DEBUG', 'WelcomeCredits=5')
    assert (given.command, given.port, given.parameter_overrides) == (
        None,
        8080,
        ['LogLevel=DEBUG', 'WelcomeCredits=5'],
    )
    assert (parse('serve', '--port', '8081').port, parse('--port', '8082', 'serve').port) == (8081, 8082)


def test_the_help_lists_every_event_the_backend_handles():
    text = build_parser().format_help()
    for spec in TRIGGERS:
        assert f'{spec.provider} {spec.event}' in text
    handled = {
        'stripe': set(StripeEvents(_Book(), live=False).types),  # type: ignore[arg-type]
        'revenuecat': set(RevenueCatEvents(_Book(), live=False).types),  # type: ignore[arg-type]
    }
    for provider, types in handled.items():
        assert types == {t.event for t in TRIGGERS if t.provider == provider}


class _Book:
    catalog = CATALOG


def test_each_trigger_has_its_own_options_and_refuses_what_it_does_not_know():
    args = parse('trigger', 'stripe', 'charge.refunded', '--account', 'acc_1', '--amount', '250', '--times', '2')
    assert (args.trigger.event, args.amount, args.times, args.url) == (
        'charge.refunded',
        250,
        2,
        'http://127.0.0.1:3000',
    )
    with pytest.raises(SystemExit):
        parse('trigger', 'stripe', 'charge.dispute.closed', '--account', 'acc_1')  # --status is required
    with pytest.raises(SystemExit):
        parse('trigger', 'stripe', 'payout.paid', '--account', 'acc_1')


# ---------------------------------------------------------------- building events


def test_a_pack_checkout_is_built_with_the_catalogs_price_and_the_account():
    event = build('stripe', 'checkout.session.completed', '--pack', 'pack_500')
    session = event['data']['object']
    assert (event['type'], event['livemode'], session['mode'], session['payment_status']) == (
        'checkout.session.completed',
        False,
        'payment',
        'paid',
    )
    assert session['client_reference_id'] == 'acc_1' and session['metadata'] == {
        'account_id': 'acc_1',
        'pack_id': 'pack_500',
    }
    assert session['amount_total'] == 1999 and session['payment_intent'].startswith('pi_')
    with pytest.raises(TriggerError, match='pack_100, pack_500'):
        build('stripe', 'checkout.session.completed', '--pack', 'pack_7')


def test_a_refund_refers_to_the_latest_payment_and_adds_to_what_was_refunded():
    payments = [
        {'id': 'pi_new', 'charge': 'ch_new', 'amount': 1999, 'amount_refunded': 500, 'status': 'succeeded', 'seq': 2},
        {'id': 'pi_old', 'charge': 'ch_old', 'amount': 499, 'amount_refunded': 0, 'status': 'succeeded', 'seq': 1},
    ]
    partial = build('stripe', 'charge.refunded', '--amount', '1000', known={'payments': payments})['data']['object']
    assert (partial['payment_intent'], partial['id'], partial['amount_refunded']) == ('pi_new', 'ch_new', 1500)
    rest = build('stripe', 'charge.refunded', '--payment', 'pi_old', known={'payments': payments})['data']['object']
    assert (rest['payment_intent'], rest['amount_refunded'], rest['refunded']) == ('pi_old', 499, True)
    with pytest.raises(TriggerError, match='buy something first'):
        build('stripe', 'charge.refunded')


def test_a_revenuecat_refund_names_the_latest_unrefunded_purchase_and_a_reversal_the_refunded_one():
    transactions = [
        {'transaction_id': 't_pack', 'original_transaction_id': 't_pack', 'product_id': 'credits_100', 'price': 4.99},
        {'transaction_id': 't_sub', 'original_transaction_id': 't_sub', 'product_id': 'pro_monthly', 'price': 9.99},
    ]
    refund = build('revenuecat', 'CANCELLATION', '--refund', known={'transactions': transactions})
    assert refund['api_version'] == '1.0'
    event = refund['event']
    assert (event['type'], event['cancel_reason'], event['transaction_id'], event['price']) == (
        'CANCELLATION',
        'CUSTOMER_SUPPORT',
        't_pack',
        -4.99,
    )
    assert (event['app_user_id'], event['environment']) == ('acc_1', 'SANDBOX')
    unsubscribed = build('revenuecat', 'CANCELLATION', known={'transactions': transactions})['event']
    assert (unsubscribed['cancel_reason'], unsubscribed['transaction_id']) == ('UNSUBSCRIBE', 't_sub')
    transactions[0]['refunded'] = True
    reversal = build('revenuecat', 'REFUND_REVERSED', known={'transactions': transactions})['event']
    assert reversal['transaction_id'] == 't_pack'
    renewal = build('revenuecat', 'RENEWAL', known={'transactions': transactions})['event']
    assert renewal['original_transaction_id'] == 't_sub' and renewal['transaction_id'] != 't_sub'


# ---------------------------------------------------------------- what the fakes remember


def test_the_fake_stripe_remembers_payments_refunds_and_disputes_per_account():
    fake = FakeStripeServer(webhook_url=None)
    completed = build('stripe', 'checkout.session.completed', '--pack', 'pack_100')
    fake.record(completed, delivered=True)
    pi = completed['data']['object']['payment_intent']
    known = fake.objects.account('acc_1')
    fake.record(build('stripe', 'charge.refunded', '--amount', '100', known=known), delivered=True)
    fake.record(build('stripe', 'charge.dispute.created', known=fake.objects.account('acc_1')), delivered=True)
    payment = fake.objects.account('acc_1')['payments'][0]
    assert (payment['id'], payment['amount'], payment['amount_refunded'], payment['status']) == (
        pi,
        499,
        100,
        'succeeded',
    )
    assert [(d['amount'], d['status']) for d in payment['disputes']] == [(499, 'needs_response')]
    assert fake.objects.account('someone else')['payments'] == []
    assert [e['delivered'] for e in fake.events] == [True, True, True]


def test_the_fake_revenuecat_remembers_transactions_and_their_refunds():
    with FakeRevenueCatServer() as fake:
        purchase = build('revenuecat', 'NON_RENEWING_PURCHASE')
        httpx.post(f'{fake.base_url}/_local/events', json={'body': purchase}).raise_for_status()
        txn = purchase['event']['transaction_id']
        refund = build('revenuecat', 'CANCELLATION', '--refund', known={'transactions': fake.transactions('acc_1')})
        httpx.post(f'{fake.base_url}/_local/events', json={'body': refund}).raise_for_status()
        known = httpx.get(f'{fake.base_url}/_local/app_users/acc_1').json()['transactions']
    assert [(t['transaction_id'], t['product_id'], t['refunded']) for t in known] == [(txn, 'credits_100', True)]


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str | None]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers['Content-Length']))
        _Receiver.received.append((body, self.headers.get('Stripe-Signature')))
        data = b'{"status": "processed"}'
        self.send_response(200)
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def webhook() -> Iterator[str]:
    server = ThreadingHTTPServer(('127.0.0.1', 0), _Receiver)
    Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.received = []
    yield f'http://127.0.0.1:{server.server_address[1]}/webhooks/stripe'
    server.shutdown()
    server.server_close()


def _create_session(fake: FakeStripeServer, **params: str) -> dict[str, Any]:
    form = {'success_url': 'https://example.com/ok?session_id={CHECKOUT_SESSION_ID}', 'client_reference_id': 'acc_1'}
    response = httpx.post(
        f'{fake.base_url}/v1/checkout/sessions',
        data={**form, **params},
        headers={'Authorization': 'Bearer sk_test_x'},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_pay_button_sends_signed_webhooks_once_and_links_to_the_success_url(webhook: str):
    with FakeStripeServer(webhook_url=webhook) as fake:
        session = _create_session(
            fake,
            **{
                'mode': 'subscription',
                'line_items[0][price]': 'price_atelier_pro_monthly',
                'line_items[0][quantity]': '1',
                'metadata[account_id]': 'acc_1',
                'metadata[plan_id]': 'pro',
                'subscription_data[metadata][account_id]': 'acc_1',
            },
        )
        page = httpx.get(session['url'])
        assert '<form method="post"' in page.text and 'Pay 9.99 USD' in page.text
        paid = httpx.post(session['url'], data={})
        again = httpx.post(session['url'], data={})
        sessions = fake.session(session['id'])
        known = fake.objects.account('acc_1')
    # the webhooks a paid subscription checkout causes, each signed with the endpoint's secret
    events = [
        verify_event(body, signature, secret=STRIPE_SECRET, tolerance=300) for body, signature in _Receiver.received
    ]
    assert [e['type'] for e in events] == [
        'checkout.session.completed',
        'customer.subscription.created',
        'invoice.paid',
    ]
    assert events[2]['data']['object']['parent']['subscription_details']['metadata'] == {'account_id': 'acc_1'}
    assert events[2]['data']['object']['amount_paid'] == 999
    assert 'Payment succeeded' in paid.text and f'https://example.com/ok?session_id={session["id"]}' in paid.text
    assert 'paid already' in again.text and len(_Receiver.received) == 3
    assert (sessions['status'], sessions['payment_status']) == ('complete', 'paid')
    assert known['subscriptions'][0]['invoiced_until'] > time.time()


def test_a_pay_button_with_no_webhook_endpoint_logs_the_event_undelivered():
    with FakeStripeServer() as fake:
        session = _create_session(fake, mode='payment', **{'line_items[0][price]': 'price_atelier_pack_100'})
        page = httpx.post(session['url'], data={})
        undelivered = httpx.get(
            f'{fake.base_url}/v1/events?delivery_success=false', headers={'Authorization': 'Bearer sk_test_x'}
        ).json()['data']
    assert 'HTTP 0' in page.text
    assert [(e['type'], e['data']['object']['id']) for e in undelivered] == [
        ('checkout.session.completed', session['id'])
    ]


def test_objects_of_a_subscription_keep_the_last_paid_period():
    objects = StripeObjects()
    invoice_event = build('stripe', 'invoice.paid', '--plan', 'pro')
    objects.record(invoice_event)
    subscription = objects.account('acc_1')['subscriptions'][0]
    renewal = build('stripe', 'invoice.paid', known=objects.account('acc_1'))['data']['object']
    assert renewal['billing_reason'] == 'subscription_cycle'
    assert renewal['lines']['data'][0]['period']['start'] == subscription['invoiced_until']


# ---------------------------------------------------------------- the review's findings


def test_a_delayed_payment_needs_an_unpaid_session_known_or_named():
    # Given no unpaid session known: succeeded or failed is refused (it would invent a purchase)
    for event in ('checkout.session.async_payment_succeeded', 'checkout.session.async_payment_failed'):
        with pytest.raises(TriggerError, match='--unpaid first'):
            build('stripe', event)
    # A named session is sent as given; a known unpaid one is used
    named = build('stripe', 'checkout.session.async_payment_succeeded', '--session', 'cs_test_elsewhere')
    assert named['data']['object']['id'] == 'cs_test_elsewhere'
    unpaid = {'id': 'cs_test_u', 'mode': 'payment', 'payment_status': 'unpaid', 'pack_id': 'pack_500'}
    known = build('stripe', 'checkout.session.async_payment_failed', known={'sessions': [unpaid]})
    assert (known['data']['object']['id'], known['data']['object']['metadata']['pack_id']) == ('cs_test_u', 'pack_500')


def test_a_refund_larger_than_what_is_left_is_refused_not_clamped():
    payments = [{'id': 'pi_1', 'charge': 'ch_1', 'amount': 499, 'amount_refunded': 100, 'status': 'succeeded'}]
    with pytest.raises(TriggerError, match='--amount 1000: pi_1 has 399 of 499 cents left to refund'):
        build('stripe', 'charge.refunded', '--amount', '1000', known={'payments': payments})
    with pytest.raises(TriggerError, match='--amount 0'):
        build('stripe', 'charge.refunded', '--amount', '0', known={'payments': payments})
    exact = build('stripe', 'charge.refunded', '--amount', '399', known={'payments': payments})['data']['object']
    assert (exact['amount_refunded'], exact['refunded']) == (499, True)


def test_unknown_ids_are_sent_as_given_by_both_providers():
    # Stripe: a payment the fake does not know, with what was paid
    refund = build('stripe', 'charge.refunded', '--payment', 'pi_elsewhere', '--amount', '499')['data']['object']
    assert (refund['payment_intent'], refund['amount'], refund['amount_refunded']) == ('pi_elsewhere', 499, 499)
    with pytest.raises(TriggerError, match='pass --amount'):
        build('stripe', 'charge.refunded', '--payment', 'pi_elsewhere')
    # RevenueCat: a transaction the fake does not know, with --product (default pro_monthly)
    for event in ('EXPIRATION', 'UNCANCELLATION', 'BILLING_ISSUE', 'PRODUCT_CHANGE'):
        body = build('revenuecat', event, '--transaction', 'txn_elsewhere')['event']
        assert (body['transaction_id'], body['product_id']) == ('txn_elsewhere', 'pro_monthly'), event
    other = build('revenuecat', 'EXPIRATION', '--transaction', 'txn_x', '--product', 'pro_monthly:p1m')['event']
    assert other['product_id'] == 'pro_monthly:p1m'


def test_events_are_created_at_the_real_time_of_the_command():
    args = parse('trigger', 'revenuecat', 'TEST', '--account', 'acc_1')
    request = Request('acc_1', args, {}, CATALOG, 1_800_000_000, now_ms=1_800_000_000_123)
    assert args.trigger.build(request)['event']['event_timestamp_ms'] == 1_800_000_000_123
    stripe_args = parse('trigger', 'stripe', 'checkout.session.completed', '--account', 'acc_1')
    stripe_request = Request('acc_1', stripe_args, {}, CATALOG, 1_800_000_000, now_ms=1_800_000_000_123)
    assert stripe_args.trigger.build(stripe_request)['created'] == 1_800_000_000


def test_local_only_endpoints_refuse_what_another_sites_page_could_post():
    event = build('stripe', 'checkout.session.completed')
    with FakeStripeServer() as stripe_fake, FakeRevenueCatServer() as rc_fake:
        # a cross-site "simple" request (text/plain, or a form) is refused; JSON is what the CLI sends
        as_text = httpx.post(f'{stripe_fake.base_url}/_local/events', content=json.dumps({'event': event}))
        assert as_text.status_code == 415 and stripe_fake.events == []
        rc_text = httpx.post(
            f'{rc_fake.base_url}/_local/events',
            content=json.dumps({'body': build('revenuecat', 'TEST')}),
            headers={'content-type': 'text/plain'},
        )
        assert rc_text.status_code == 415
        assert httpx.post(f'{stripe_fake.base_url}/_local/events', json={'event': event}).status_code == 200
        # the Pay button pays only from the fake's own checkout page
        session = _create_session(stripe_fake, mode='payment', **{'line_items[0][price]': 'price_atelier_pack_100'})
        elsewhere = httpx.post(session['url'], data={}, headers={'origin': 'http://evil.example'})
        assert elsewhere.status_code == 403 and stripe_fake.session(session['id'])['status'] == 'open'
        own = httpx.post(session['url'], data={}, headers={'origin': stripe_fake.base_url})
        assert own.status_code == 200 and stripe_fake.session(session['id'])['status'] == 'complete'


def test_the_cli_finds_the_fakes_through_the_gateway_and_nothing_without_one():
    from infra.local.triggers.cli import local_services

    class Services(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({'services': {'stripe': 'http://127.0.0.1:1'}}).encode()
            self.send_response(200 if self.path == '/_local/services' else 404)
            self.send_header('content-length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(('127.0.0.1', 0), Services)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert local_services(f'http://127.0.0.1:{server.server_address[1]}') == {'stripe': 'http://127.0.0.1:1'}
    finally:
        server.shutdown()
        server.server_close()
    assert local_services(f'http://127.0.0.1:{server.server_address[1]}') == {}  # nothing listening
