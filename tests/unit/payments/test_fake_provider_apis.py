"""The local fakes of the providers' APIs answer like the real ones for what the backfill asks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from infra.local.fake_revenuecat import FakeRevenueCatServer
from infra.local.fake_stripe import FakeStripeServer
from tests.support_payments import invoice, invoice_intent, stripe_event

STRIPE_AUTH = {'Authorization': 'Bearer sk_test_x'}


@pytest.fixture(scope='module')
def stripe_fake() -> Iterator[FakeStripeServer]:
    with FakeStripeServer() as fake:
        for i, (kind, delivered) in enumerate(
            [
                ('charge.refunded', False),
                ('invoice.paid', True),
                ('charge.dispute.created', False),
                ('plan.created', False),
            ]
        ):
            fake.add_event({'id': f'evt_{i}', 'object': 'event', 'type': kind, 'created': 100 + i}, delivered=delivered)
        yield fake


def ids(fake: FakeStripeServer, query: str) -> tuple[list[str], bool]:
    response = httpx.get(f'{fake.base_url}/v1/events?{query}', headers=STRIPE_AUTH)
    assert response.status_code == 200, response.text
    body = response.json()
    return [e['id'] for e in body['data']], body['has_more']


def test_events_are_listed_newest_first_with_stripes_filters(stripe_fake: FakeStripeServer):
    assert ids(stripe_fake, '') == (['evt_3', 'evt_2', 'evt_1', 'evt_0'], False)
    assert ids(stripe_fake, 'delivery_success=false') == (['evt_3', 'evt_2', 'evt_0'], False)
    assert ids(stripe_fake, 'delivery_success=true') == (['evt_1'], False)
    assert ids(stripe_fake, 'created[gte]=101&created[lt]=103') == (['evt_2', 'evt_1'], False)
    assert ids(stripe_fake, 'type=charge.*') == (['evt_2', 'evt_0'], False)
    assert ids(stripe_fake, 'types[0]=invoice.paid&types[1]=plan.created') == (['evt_3', 'evt_1'], False)


def test_events_are_paginated_with_cursors(stripe_fake: FakeStripeServer):
    assert ids(stripe_fake, 'limit=2') == (['evt_3', 'evt_2'], True)
    assert ids(stripe_fake, 'limit=2&starting_after=evt_2') == (['evt_1', 'evt_0'], False)
    assert ids(stripe_fake, 'limit=1&ending_before=evt_1') == (['evt_2'], True)
    unknown = httpx.get(f'{stripe_fake.base_url}/v1/events?starting_after=evt_x', headers=STRIPE_AUTH)
    assert unknown.status_code == 400 and unknown.json()['error']['code'] == 'resource_missing'
    one = httpx.get(f'{stripe_fake.base_url}/v1/events/evt_1', headers=STRIPE_AUTH)
    assert one.json()['type'] == 'invoice.paid'
    assert httpx.get(f'{stripe_fake.base_url}/v1/events').status_code == 401


def test_the_stripe_fake_lists_the_payments_of_the_invoices_it_knows():
    # Given invoices the fake sent or was told about: paid (as webhooks carry it: no `payments`), $0, expanded
    with FakeStripeServer() as fake:
        fake.add_event(stripe_event('invoice.paid', invoice('acc_1', subscription='sub_1', invoice_id='in_p')))
        fake.add_event(
            stripe_event('invoice.paid', invoice('acc_1', subscription='sub_1', invoice_id='in_0', amount_paid=0))
        )
        expanded = invoice('acc_1', subscription='sub_1', invoice_id='in_e', payment_intent='pi_other', expanded=True)
        fake.add_event(stripe_event('invoice.paid', expanded))

        def listed(query: str) -> httpx.Response:
            return httpx.get(f'{fake.base_url}/v1/invoice_payments?{query}', headers=STRIPE_AUTH)

        # Then each lists its InvoicePayments as Stripe's GET /v1/invoice_payments does
        [paid] = listed('invoice=in_p&status=paid').json()['data']
        assert (paid['object'], paid['status'], paid['invoice']) == ('invoice_payment', 'paid', 'in_p')
        assert paid['payment'] == {'type': 'payment_intent', 'payment_intent': invoice_intent('in_p')}
        assert listed('invoice=in_0').json()['data'] == []
        assert [p['payment']['payment_intent'] for p in listed('invoice=in_e').json()['data']] == ['pi_other']
        assert listed('invoice=in_unknown').status_code == 404
        assert listed('invoice=in_p').status_code == 200 and listed('').status_code == 400
        # And an outage answers 500
        fake.unavailable.add('/v1/invoice_payments')
        assert listed('invoice=in_p').status_code == 500


def test_the_revenuecat_fake_serves_subscribers_and_injected_failures():
    with FakeRevenueCatServer(api_key='rc_key') as fake:
        fake.set_subscriber('user 1', {'non_subscriptions': {'credits_100': [{'store_transaction_id': 't1'}]}})
        auth = {'Authorization': 'Bearer rc_key'}
        known = httpx.get(f'{fake.base_url}/v1/subscribers/user%201', headers=auth).json()
        assert known['subscriber']['non_subscriptions']['credits_100'][0]['store_transaction_id'] == 't1'
        assert known['subscriber']['original_app_user_id'] == 'user 1' and known['request_date_ms'] > 0
        unknown = httpx.get(f'{fake.base_url}/v1/subscribers/nobody', headers=auth).json()
        assert unknown['subscriber']['subscriptions'] == {}  # get or create
        assert httpx.get(f'{fake.base_url}/v1/subscribers/nobody', headers={'Authorization': 'x'}).status_code == 401
        fake.fail('nobody', status=503, times=1)
        assert httpx.get(f'{fake.base_url}/v1/subscribers/nobody', headers=auth).status_code == 503
        assert httpx.get(f'{fake.base_url}/v1/subscribers/nobody', headers=auth).status_code == 200
        assert fake.requests[0]['app_user_id'] == 'user 1'
