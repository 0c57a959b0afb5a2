"""RevenueCat webhooks: fail-closed authorization, store transactions granted once, refunds, plans."""

from __future__ import annotations

import time

import boto3
import pytest

from tests.integration.payments.conftest import World, set_setting
from tests.support_payments import RC_AUTH, rc_event, rc_purchase, uid

DAY_MS = 24 * 3600 * 1000


# ---------------------------------------------------------------- authorization


def test_the_configured_authorization_is_accepted(world: World):
    account = world.account()
    body = rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', uid('txn'))
    assert world.rc(body).status == 200
    assert (
        world.rc(rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', uid('txn')), authorization=RC_AUTH).status
        == 200
    )
    assert world.balance(account) == 200


@pytest.mark.parametrize('authorization', [None, '', 'Bearer wrong', f'Bearer {RC_AUTH}x', RC_AUTH[:-1], 'Basic abc'])
def test_a_missing_or_wrong_authorization_is_401_and_nothing_is_stored(world: World, authorization):
    account = world.account()
    reply = world.rc(
        rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', uid('txn')), authorization=authorization
    )
    assert reply.status == 401
    assert world.event_items() == [] and world.balance(account) == 0


@pytest.mark.parametrize('unset', ['deleted', 'empty'])
def test_without_a_configured_secret_everything_is_refused(world: World, unset: str):
    # Given no RevenueCat secret in SSM (or an empty one)
    ssm = boto3.client('ssm', region_name='us-east-1')
    if unset == 'deleted':
        ssm.delete_parameter(Name='/atelier/test/revenuecat-webhook-auth')
    else:
        ssm.put_parameter(Name='/atelier/test/revenuecat-webhook-auth', Value=' ', Type='SecureString', Overwrite=True)
    account = world.account()
    # When events arrive with any header at all, even none or an empty "Bearer "
    for authorization in (f'Bearer {RC_AUTH}', None, 'Bearer ', 'Bearer  '):
        reply = world.rc(
            rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', uid('txn')), authorization=authorization
        )
        # Then they are refused (fail closed)
        assert reply.status == 401
    assert world.balance(account) == 0


def test_malformed_bodies_are_400(world: World):
    assert world.rc('{not json').status == 400
    assert world.rc({'api_version': '1.0'}).status == 400
    assert world.rc({'event': {'type': 'RENEWAL'}}).status == 400


@pytest.mark.parametrize(
    'fields',
    [
        {'id': 'x' * 3000},
        {'transaction_id': 'x' * 3000},
        {'app_user_id': ''},
        {'expiration_at_ms': 10**22},
        {'expiration_at_ms': -5},
        {'expiration_at_ms': 1.5e12},
        {'purchased_at_ms': True},
        {'price': 1e308},
        {'price': 'free'},
    ],
)
def test_authentic_events_with_unusable_fields_are_400_and_change_nothing(world: World, fields: dict[str, object]):
    # Given an authorized subscription purchase whose ids or times cannot be real
    account = world.account()
    purchase = rc_purchase('INITIAL_PURCHASE', account, 'pro_monthly', uid('txn'))
    purchase['event'].update(fields)
    # When it arrives, then it is refused as malformed, before anything is stored or granted
    assert world.rc(purchase).status == 400
    assert world.event_items() == [] and world.balance(account) == 0


# ---------------------------------------------------------------- idempotency


def test_a_retry_with_the_same_id_is_a_no_op_and_a_new_transaction_grants_again(world: World):
    # Given a subscription purchase
    account = world.account()
    purchase = rc_purchase('INITIAL_PURCHASE', account, 'pro_monthly', 'txn_1', original_transaction_id='otx_1')
    # When RevenueCat retries it (same id, same event_timestamp_ms)
    assert world.rc(purchase).body['status'] == 'processed'
    assert world.rc(purchase).body['status'] == 'duplicate'
    # Then one period was granted and the plan is pro
    assert world.balance(account) == 1000 and world.plan(account) == 'pro'
    # When the next period renews with a new transaction id
    renewal = rc_purchase(
        'RENEWAL',
        account,
        'pro_monthly',
        'txn_2',
        original_transaction_id='otx_1',
        expiration_at_ms=int(time.time() * 1000) + 60 * DAY_MS,
    )
    world.rc(renewal)
    # Then it grants again
    assert world.balance(account) == 2000
    assert world.business_ids(account) == ['rc:txn:txn_1', 'rc:txn:txn_2']


def test_two_deliveries_of_one_transaction_under_different_event_ids_grant_once(world: World):
    account = world.account()
    first = rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', 'txn_same')
    second = rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', 'txn_same')
    world.rc(first)
    world.rc(second)
    assert world.balance(account) == 100


# ---------------------------------------------------------------- business rules


def test_unknown_products_and_accounts_are_parked_with_200(world: World):
    account = world.account()
    unknown_product = rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_9000', uid('txn'))
    unknown_account = rc_purchase('NON_RENEWING_PURCHASE', 'acc_nobody', 'credits_100', uid('txn'))
    for body in (unknown_product, unknown_account):
        reply = world.rc(body)
        assert reply.status == 200 and reply.body['status'] == 'parked'
        assert world.stored('revenuecat', body['event']['id']).status == 'parked'
    assert world.balance(account) == 0


def test_test_events_are_acknowledged_and_change_nothing(world: World):
    body = rc_event('TEST', 'anyone')
    reply = world.rc(body)
    assert reply.status == 200 and reply.body['status'] == 'ignored'


def test_unknown_event_types_are_acknowledged(world: World):
    account = world.account()
    reply = world.rc(rc_event('SUBSCRIPTION_EXTENDED', account, brand_new_field=1))
    assert reply.status == 200 and reply.body['status'] == 'ignored'


def test_cancellation_by_the_user_keeps_credits_and_a_refund_claws_back(world: World):
    account = world.account()
    world.rc(rc_purchase('INITIAL_PURCHASE', account, 'pro_monthly', 'txn_a', original_transaction_id='otx_a'))
    # When the user turns auto-renew off
    world.rc(
        rc_event(
            'CANCELLATION',
            account,
            cancel_reason='UNSUBSCRIBE',
            transaction_id='txn_a',
            original_transaction_id='otx_a',
            product_id='pro_monthly',
        )
    )
    # Then credits and plan stay
    assert world.balance(account) == 1000 and world.plan(account) == 'pro'
    # When the store refunds the purchase (CUSTOMER_SUPPORT, negative price)
    world.rc(
        rc_event(
            'CANCELLATION',
            account,
            cancel_reason='CUSTOMER_SUPPORT',
            transaction_id='txn_a',
            original_transaction_id='otx_a',
            product_id='pro_monthly',
            price=-9.99,
        )
    )
    # Then the period's credits are taken back
    assert world.balance(account) == 0
    # When the refund is reversed (App Store)
    world.rc(
        rc_event(
            'REFUND_REVERSED',
            account,
            transaction_id='txn_a',
            original_transaction_id='otx_a',
            product_id='pro_monthly',
        )
    )
    # Then they are given back, once
    assert world.balance(account) == 1000
    assert world.reconciled(account)


def test_a_refund_after_the_credits_were_spent_leaves_the_account_owing(world: World):
    from atelier.wiring import ledger

    account = world.account()
    world.rc(rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', 'txn_spent'))
    ledger().hold(account, task_id='task_1', amount=80)
    ledger().capture(account, task_id='task_1', amount=80)
    world.rc(
        rc_event(
            'CANCELLATION',
            account,
            cancel_reason='CUSTOMER_SUPPORT',
            transaction_id='txn_spent',
            product_id='credits_100',
            price=-4.99,
        )
    )
    state = world.get(account)
    assert state.available == -80 and state.owed == 80


def test_expiration_ends_the_plan_and_keeps_the_credits(world: World):
    account = world.account()
    world.rc(rc_purchase('INITIAL_PURCHASE', account, 'pro_monthly', 'txn_e', original_transaction_id='otx_e'))
    assert world.plan(account) == 'pro'
    world.rc(
        rc_event(
            'EXPIRATION',
            account,
            product_id='pro_monthly',
            transaction_id='txn_e',
            original_transaction_id='otx_e',
            expiration_reason='UNSUBSCRIBE',
        )
    )
    assert world.plan(account) == 'free'
    assert world.balance(account) == 1000


def test_expiration_before_cancellation_and_billing_issue_ends_consistent(world: World):
    # Given a subscription, then the three events RevenueCat dispatches together, in the worst order
    account = world.account()
    world.rc(rc_purchase('INITIAL_PURCHASE', account, 'pro_monthly', 'txn_o', original_transaction_id='otx_o'))
    common = {'product_id': 'pro_monthly', 'transaction_id': 'txn_o', 'original_transaction_id': 'otx_o'}
    now = int(time.time() * 1000) + 10_000
    billing = rc_event('BILLING_ISSUE', account, event_timestamp_ms=now, **common)
    cancel = rc_event('CANCELLATION', account, cancel_reason='BILLING_ERROR', event_timestamp_ms=now + 1, **common)
    expire = rc_event('EXPIRATION', account, expiration_reason='BILLING_ERROR', event_timestamp_ms=now + 2, **common)
    for body in (expire, cancel, billing):
        assert world.rc(body).status == 200
    # Then the plan is off and the period's credits stay
    assert world.plan(account) == 'free' and world.balance(account) == 1000


def test_product_change_alone_grants_nothing(world: World):
    account = world.account()
    world.rc(rc_purchase('INITIAL_PURCHASE', account, 'pro_monthly', 'txn_p', original_transaction_id='otx_p'))
    reply = world.rc(
        rc_event(
            'PRODUCT_CHANGE',
            account,
            product_id='pro_monthly',
            new_product_id='pro_yearly',
            transaction_id='txn_p',
            original_transaction_id='otx_p',
        )
    )
    assert reply.status == 200
    assert world.balance(account) == 1000


def test_a_trial_turns_the_plan_on_without_credits_and_the_conversion_grants(world: World):
    account = world.account()
    world.rc(
        rc_purchase(
            'INITIAL_PURCHASE',
            account,
            'pro_monthly',
            'txn_t',
            original_transaction_id='otx_t',
            period_type='TRIAL',
            price=0,
        )
    )
    assert world.plan(account) == 'pro' and world.balance(account) == 0
    world.rc(
        rc_purchase(
            'RENEWAL',
            account,
            'pro_monthly',
            'txn_t2',
            original_transaction_id='otx_t',
            is_trial_conversion=True,
            expiration_at_ms=int(time.time() * 1000) + 60 * DAY_MS,
        )
    )
    assert world.balance(account) == 1000


# ---------------------------------------------------------------- identity


def test_an_alias_or_original_app_user_id_resolves_the_account(world: World):
    account = world.account()
    by_alias = rc_purchase(
        'NON_RENEWING_PURCHASE',
        '$RCAnonymousID:abc',
        'credits_100',
        uid('txn'),
        original_app_user_id='$RCAnonymousID:abc',
        aliases=['$RCAnonymousID:abc', account],
    )
    by_original = rc_purchase(
        'NON_RENEWING_PURCHASE', 'someone-unknown', 'credits_100', uid('txn'), original_app_user_id=account, aliases=[]
    )
    assert world.rc(by_alias).body['status'] == 'processed'
    assert world.rc(by_original).body['status'] == 'processed'
    assert world.balance(account) == 200


def test_an_anonymous_app_user_alone_is_parked(world: World):
    body = rc_purchase('NON_RENEWING_PURCHASE', '$RCAnonymousID:xyz', 'credits_100', uid('txn'))
    reply = world.rc(body)
    assert reply.status == 200 and reply.body['status'] == 'parked'


def test_transfer_moves_the_plan_and_leaves_credits(world: World):
    # Given a subscriber on pro with the period's credits
    old, new = world.account(), world.account()
    world.rc(rc_purchase('INITIAL_PURCHASE', old, 'pro_monthly', 'txn_x', original_transaction_id='otx_x'))
    # When RevenueCat transfers the purchases to another app user (no app_user_id on TRANSFER)
    body = rc_event('TRANSFER', None, transferred_from=[old], transferred_to=[new])
    assert world.rc(body).status == 200
    assert world.rc(body).body['status'] == 'duplicate'
    # Then the plan moved; the credits stayed where they were granted
    assert (world.plan(old), world.plan(new)) == ('free', 'pro')
    assert (world.balance(old), world.balance(new)) == (1000, 0)
    # And later renewals of that subscription credit the new owner
    world.rc(
        rc_purchase(
            'RENEWAL',
            new,
            'pro_monthly',
            'txn_x2',
            original_transaction_id='otx_x',
            expiration_at_ms=int(time.time() * 1000) + 60 * DAY_MS,
        )
    )
    assert world.balance(new) == 1000


# ---------------------------------------------------------------- environments


def test_a_production_event_on_a_test_stage_is_rejected(world: World):
    account = world.account()
    body = rc_purchase('NON_RENEWING_PURCHASE', account, 'credits_100', uid('txn'), environment='PRODUCTION')
    reply = world.rc(body)
    assert reply.status == 400 and reply.body['error']['code'] == 'mode_mismatch'
    assert world.stored('revenuecat', body['event']['id']).status == 'rejected'
    assert world.balance(account) == 0


def test_on_a_live_stage_sandbox_purchases_count_only_for_testers(world: World, monkeypatch: pytest.MonkeyPatch):
    # Given a live stage with one allow-listed tester
    tester, customer = world.account(), world.account()
    set_setting(monkeypatch, 'PAYMENTS_LIVE_MODE', 'true')
    set_setting(monkeypatch, 'PAYMENTS_SANDBOX_ACCOUNTS', f'someone-else, {tester}')
    # When both buy in the sandbox, and the customer buys in production
    assert (
        world.rc(rc_purchase('NON_RENEWING_PURCHASE', customer, 'credits_100', uid('txn'))).body['status'] == 'ignored'
    )
    assert (
        world.rc(rc_purchase('NON_RENEWING_PURCHASE', tester, 'credits_100', uid('txn'))).body['status'] == 'processed'
    )
    prod = rc_purchase('NON_RENEWING_PURCHASE', customer, 'credits_100', uid('txn'), environment='PRODUCTION')
    assert world.rc(prod).body['status'] == 'processed'
    # Then a sandbox purchase never moved a real customer's balance
    assert (world.balance(customer), world.balance(tester)) == (100, 100)
