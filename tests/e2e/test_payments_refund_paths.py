"""Refund paths over real HTTP on the offline stack (issue 9): what a user's balance says after a store refund
of a renewal that was never booked, and after refund -> reversal -> refund."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.e2e.conftest import Stack, ledger_of, me
from tests.e2e.test_payments_webhooks import post_rc
from tests.support_payments import rc_event, rc_purchase


@contextmanager
def ledger_writes_failing(stack: Stack, function: str) -> Iterator[None]:
    """The function's ledger bookings fail (AccessDenied, as an outage would) while everything else works: a
    booking is one transaction that puts a new entry item, and a transaction is authorized item by item, as
    each item's own action on its table (setting the account's plan, an UpdateItem, still works)."""
    iam = stack.client('iam')
    role = stack.server.stack.role_of(function).rsplit('/', 1)[-1]
    table = stack.physical_id('LedgerTable')
    statement = {'Effect': 'Deny', 'Action': 'dynamodb:PutItem', 'Resource': f'arn:aws:dynamodb:*:*:table/{table}'}
    deny = {'Version': '2012-10-17', 'Statement': [statement]}
    iam.put_role_policy(RoleName=role, PolicyName='e2e-ledger-outage', PolicyDocument=json.dumps(deny))
    try:
        yield
    finally:
        iam.delete_role_policy(RoleName=role, PolicyName='e2e-ledger-outage')


@pytest.mark.access_denied_expected
def test_a_refund_of_a_renewal_retried_after_its_period_takes_nothing(stack: Stack):
    # Given a user with a 100-credit pack bought in the app
    user = stack.sign_in()
    uid = user.account_id
    assert (
        post_rc(stack, rc_purchase('NON_RENEWING_PURCHASE', uid, 'credits_100', f'txn_pack_{uid}')).status_code == 200
    )
    assert me(user)['balance'] == {'available': 100, 'held': 0}
    # And a renewal of a period ending in 3 s whose first delivery fails at the ledger (RevenueCat retries later)
    period_end_ms = int(time.time() * 1000) + 3000
    renewal = rc_purchase('RENEWAL', uid, 'pro_monthly', f'txn_ren_{uid}', expiration_at_ms=period_end_ms)
    before = len(stack.server.stack.iam.decisions)
    with ledger_writes_failing(stack, 'RevenueCatWebhookFunction'):
        first = post_rc(stack, renewal)
    assert first.status_code >= 500, first.text
    # (after the plan was set: the booking itself failed)
    assert [d.action for d in stack.server.stack.iam.denied(since=before)] == ['dynamodb:PutItem']
    assert me(user)['plan'] == 'pro'
    # When RevenueCat retries after the period ended, and the store then refunds that renewal
    time.sleep(max(0.0, period_end_ms / 1000 + 0.5 - time.time()))
    assert post_rc(stack, renewal).status_code == 200
    refund = rc_event('CANCELLATION', uid, cancel_reason='CUSTOMER_SUPPORT', transaction_id=f'txn_ren_{uid}')
    assert post_rc(stack, refund).status_code == 200
    # Then the renewal booked nothing and its refund took nothing: the pack is whole, nothing is owed
    assert me(user)['balance'] == {'available': 100, 'held': 0}
    assert [(e['kind'], e['amount']) for e in ledger_of(user)] == [('grant', 100)]


def test_a_store_refund_after_a_refund_reversal_takes_the_credits_back_again(stack: Stack):
    # Given a user who bought a 100-credit pack in the app
    user = stack.sign_in()
    uid = user.account_id
    txn = f'txn_pack_{uid}'
    assert post_rc(stack, rc_purchase('NON_RENEWING_PURCHASE', uid, 'credits_100', txn)).status_code == 200
    refund = rc_event('CANCELLATION', uid, cancel_reason='CUSTOMER_SUPPORT', transaction_id=txn, price=-4.99)
    reversal = rc_event('REFUND_REVERSED', uid, transaction_id=txn, product_id='credits_100')
    second_refund = rc_event('CANCELLATION', uid, cancel_reason='CUSTOMER_SUPPORT', transaction_id=txn, price=-4.99)
    # When the store refunds it, reverses the refund, and refunds it again (each webhook delivered twice)
    seen = []
    for body in (refund, reversal, second_refund):
        for _ in range(2):
            assert post_rc(stack, body).status_code == 200
        seen.append(me(user)['balance']['available'])
    # Then the balance the user sees goes 0 -> 100 -> 0, each step booked once under its own business id
    assert seen == [0, 100, 0]
    assert sorted((e['kind'], e['amount']) for e in ledger_of(user)) == [
        ('claw_back', -100),
        ('claw_back', -100),
        ('grant', 100),
        ('grant', 100),
    ]
    # And a late redelivery of the reversal (older than the second refund) changes nothing
    assert post_rc(stack, reversal).status_code == 200
    assert me(user)['balance'] == {'available': 0, 'held': 0}
