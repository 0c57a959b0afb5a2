"""The local fakes of the providers' APIs answer like the real ones for what the backfill asks."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from infra.local.fake_revenuecat import FakeRevenueCatServer
from infra.local.fake_stripe import FakeStripeServer

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
