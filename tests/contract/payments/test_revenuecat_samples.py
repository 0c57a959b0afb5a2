"""RevenueCat's published sample webhooks, authorized and posted through the real handler, on moto.

The samples are ``PRODUCTION`` events, so the stage is live. What each test changes in a sample is what
``samples.revenuecat(...)`` is given (ids of our accounts and catalog; timestamps moved as one block).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.contract.payments.samples import FIXTURES, revenuecat, sample
from tests.integration.payments.conftest import World, personal_data_in, set_setting


@pytest.fixture
def live(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    set_setting(monkeypatch, 'PAYMENTS_LIVE_MODE', 'true')
    return world


def post(world: World, body: dict) -> dict:
    """Post a sample as RevenueCat would (Bearer authorization); check the raw body was stored as received
    and the record has none of its personal data."""
    raw = json.dumps(body, indent=2)
    reply = world.rc(raw)
    assert reply.status == 200, reply
    assert world.stored('revenuecat', body['event']['id']) is not None
    assert world.raw('revenuecat', body['event']['id']) == raw.encode()
    assert (
        personal_data_in(world.event_item('revenuecat', body['event']['id']) or {}, body) == []
    )  # the record kept forever
    return dict(reply.body)


@pytest.mark.parametrize('path', sorted((FIXTURES / 'revenuecat').glob('*.json')), ids=lambda p: p.stem)
def test_every_sample_as_published_is_answered_200_and_stored_raw(live: World, path: Path):
    # The published ids are nobody Atelier knows (and TEST is a test): accepted, stored, nothing booked.
    body = sample(f'revenuecat/{path.name}')
    assert post(live, body)['status'] in ('parked', 'ignored')


def test_the_subscription_samples_grant_refund_reverse_and_expire(live: World):
    account = live.account()
    now = int(time.time() * 1000)
    weekly = {'app_user_id': account, 'product_id': 'pro_monthly'}
    # INITIAL_PURCHASE: the period's credits and the plan
    initial = revenuecat('initial_purchase', at_ms=now - 50_000, **weekly)
    assert post(live, initial)['status'] == 'processed'
    assert (live.balance(account), live.plan(account)) == (1000, 'pro')
    assert live.business_ids(account) == ['rc:txn:123456789012345']
    # a retry of the same delivery changes nothing
    assert post(live, initial)['status'] == 'duplicate'
    # CANCELLATION (UNSUBSCRIBE), found through the alias user_1234: auto-renew off, credits and plan kept
    unsubscribe = revenuecat(
        'cancellation_unsubscribe', alias=('user_1234', account), product_id='pro_monthly', at_ms=now - 40_000
    )
    assert post(live, unsubscribe)['status'] == 'processed'
    assert (live.balance(account), live.plan(account)) == (1000, 'pro')
    # PRODUCT_CHANGE: nothing granted (the new product's credits come with its renewal)
    change = revenuecat('product_change', at_ms=now - 35_000, **weekly)
    assert post(live, change)['status'] == 'processed'
    assert live.balance(account) == 1000
    # CANCELLATION with CUSTOMER_SUPPORT (a refund, price -9.99) of that purchase: taken back
    refund = revenuecat(
        'cancellation_customer_support',
        alias=('user_1234', account),
        product_id='pro_monthly',
        at_ms=now - 30_000,
        transaction_id='123456789012345',
        original_transaction_id='123456789012345',
    )
    assert post(live, refund)['status'] == 'processed'
    assert live.balance(account) == 0
    # REFUND_REVERSED: given back
    reversed_ = revenuecat('refund_reversed', at_ms=now - 20_000, **weekly)
    assert post(live, reversed_)['status'] == 'processed'
    assert live.balance(account) == 1000
    # EXPIRATION: the plan ends, the credits stay
    expiration = revenuecat('expiration', at_ms=now - 10_000, **weekly)
    assert post(live, expiration)['status'] == 'processed'
    assert (live.balance(account), live.plan(account)) == (1000, 'free')
    assert live.reconciled(account)


def test_the_renewal_sample_grants_a_period(live: World):
    account = live.account()
    body = revenuecat('renewal', app_user_id=account, product_id='pro_monthly', at_ms=int(time.time() * 1000))
    assert post(live, body)['status'] == 'processed'
    assert (live.balance(account), live.plan(account)) == (1000, 'pro')


def test_the_non_renewing_purchase_sample_grants_the_pack(live: World):
    account = live.account()
    body = revenuecat('non_renewing_purchase', app_user_id=account, product_id='credits_100')
    assert post(live, body)['status'] == 'processed'
    assert live.balance(account) == 100
    assert live.business_ids(account) == ['rc:txn:123456789012345']


def test_the_trial_sample_turns_the_plan_on_without_credits(live: World):
    account = live.account()
    body = revenuecat('trial_started', app_user_id=account, product_id='pro_monthly', at_ms=int(time.time() * 1000))
    assert post(live, body)['status'] == 'processed'
    assert (live.balance(account), live.plan(account)) == (0, 'pro')


def test_the_transfer_sample_moves_the_plan_and_leaves_the_credits(live: World):
    old, new = live.account(), live.account()
    initial = revenuecat(
        'initial_purchase', app_user_id=old, product_id='pro_monthly', at_ms=int(time.time() * 1000) - 1000
    )
    post(live, initial)
    transfer = revenuecat('transfer', transferred_from=[old], transferred_to=[new])
    assert 'app_user_id' not in transfer['event']
    assert post(live, transfer)['status'] == 'processed'
    assert (live.plan(old), live.plan(new)) == ('free', 'pro')
    assert (live.balance(old), live.balance(new)) == (1000, 0)


def test_the_test_event_is_acknowledged_and_changes_nothing(live: World):
    reply = post(live, sample('revenuecat/test.json'))
    assert reply['status'] == 'ignored'
    assert live.stored('revenuecat', 'E5D1B3B0-8C2A-4F0E-9F7A-3C1D2B4A5E6F').status == 'ignored'


def test_a_sample_without_the_authorization_is_refused(live: World):
    body = revenuecat('non_renewing_purchase', app_user_id=live.account(), product_id='credits_100')
    assert live.rc(body, authorization=None).status == 401
    assert live.event_items() == []
