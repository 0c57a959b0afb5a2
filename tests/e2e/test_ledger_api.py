"""Balances and the ledger over HTTP: what /v1/me says always equals the sum of /v1/ledger."""

import json
from typing import Any

import pytest

from infra.local.runtime import FunctionError
from infra.local.template import ROOT
from tests.e2e.conftest import Stack, User


def all_entries(user: User, limit: int) -> list[dict[str, Any]]:
    entries, cursor = [], None
    while True:
        params: dict[str, Any] = {'limit': limit, **({'cursor': cursor} if cursor else {})}
        page = user.get('/v1/ledger', params=params)
        assert page.status_code == 200, page.text
        entries += page.json()['items']
        cursor = page.json()['next_cursor']
        if cursor is None:
            return entries


def test_balance_equals_the_sum_of_the_ledger_newest_first_across_pages(stack: Stack):
    # Given an account that ops credited and debited several times
    user = stack.sign_in()
    for amount in (100, 25, -40, 7, 3):
        stack.adjust(user.account_id, amount)
    # When the client reads its balance and pages through its ledger two entries at a time
    me = user.get('/v1/me').json()
    entries = all_entries(user, limit=2)
    # Then every entry is there once, newest first, and the balance is their sum
    assert [e['amount'] for e in entries] == [3, 7, -40, 25, 100]
    assert len({e['id'] for e in entries}) == 5
    assert me['balance'] == {'available': 95, 'held': 0}
    assert sum(e['amount'] for e in entries) == me['balance']['available']
    assert sum(e['held_delta'] for e in entries) == me['balance']['held']
    assert all(e['kind'] == 'adjust' for e in entries)


def test_a_tampered_cursor_is_a_400(stack: Stack):
    user = stack.sign_in()
    for amount in (1, 2):
        stack.adjust(user.account_id, amount)
    cursor = user.get('/v1/ledger', params={'limit': 1}).json()['next_cursor']
    tampered = cursor[:-2] + ('AA' if not cursor.endswith('AA') else 'BB')
    response = user.get('/v1/ledger', params={'limit': 1, 'cursor': tampered})
    assert response.status_code == 400
    assert response.json()['error']['code'] == 'invalid_cursor'


def test_another_accounts_cursor_is_a_400(stack: Stack):
    alice, bob = stack.sign_in(), stack.sign_in()
    for amount in (1, 2):
        stack.adjust(alice.account_id, amount)
    cursor = alice.get('/v1/ledger', params={'limit': 1}).json()['next_cursor']
    assert bob.get('/v1/ledger', params={'cursor': cursor}).status_code == 400


@pytest.mark.parametrize('limit', ['0', '101', '-1', 'ten'])
def test_limit_outside_1_to_100_is_a_422(stack: Stack, limit: str):
    user = stack.sign_in()
    response = user.get('/v1/ledger', params={'limit': limit})
    assert response.status_code == 422
    assert response.json()['error']['code'] == 'validation_error'


def test_the_ledger_needs_a_token(stack: Stack):
    assert stack.http.get('/v1/ledger').status_code == 401


def test_an_ops_adjustment_is_applied_once_however_often_it_is_run(stack: Stack):
    # Given an ops adjustment event (as in tests/events/admin/adjust_credits.json) for an account
    user = stack.sign_in()
    event = json.loads((ROOT / 'tests/events/admin/adjust_credits.json').read_text())
    event['account_id'] = user.account_id
    # When ops run it three times from the console
    results = [stack.invoke('AdjustCreditsFunction', event) for _ in range(3)]
    # Then the credit landed once, and every run reports the same entry
    assert user.get('/v1/me').json()['balance']['available'] == event['amount']
    assert len({r['entry']['id'] for r in results}) == 1


def test_an_adjustment_with_bad_input_changes_nothing(stack: Stack):
    user = stack.sign_in()
    for bad in ({'amount': 0}, {'amount': 10**12}, {'account_id': 'acct_missing'}, {'reason': ''}):
        event = {'account_id': user.account_id, 'amount': 5, 'business_id': 'x', 'reason': 'test', 'actor': 'e2e'}
        with pytest.raises(FunctionError):
            stack.invoke('AdjustCreditsFunction', {**event, **bad, 'business_id': json.dumps(bad)})
    assert user.get('/v1/me').json()['balance']['available'] == 0
    assert user.get('/v1/ledger').json()['items'] == []


def test_the_reconcile_job_finds_every_account_balanced_and_flags_a_corrupted_one(stack: Stack):
    # Given accounts with activity
    users = [stack.sign_in() for _ in range(3)]
    for user in users:
        stack.adjust(user.account_id, 40)
        stack.adjust(user.account_id, -15)
    # When the scheduled reconcile job runs over every account
    report = stack.invoke('ReconcileLedgerFunction', {'source': 'aws.events', 'detail-type': 'Scheduled Event'})
    # Then it checked them all and found nothing wrong
    assert report['checked'] >= len(users)
    assert report['mismatched'] == []
    # And when someone edits a balance outside the ledger, the job names that account
    corrupted = users[0].account_id
    stack.client('dynamodb').update_item(
        TableName=stack.physical_id('LedgerTable'),
        Key={'pk': {'S': f'ACCT#{corrupted}'}, 'sk': {'S': 'ACCOUNT'}},
        UpdateExpression='SET available = :v',
        ExpressionAttributeValues={':v': {'N': '1000'}},
    )
    report = stack.invoke('ReconcileLedgerFunction', {'account_ids': [u.account_id for u in users]})
    assert report == {'checked': 3, 'mismatched': [corrupted]}
