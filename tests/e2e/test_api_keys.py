"""API keys over HTTP on the offline stack: ops create one (ManageApiKeysFunction, through the Lambda API), a
server uses it with X-API-Key on the routes its scopes allow and nowhere else, and a revoked key stops at once."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.e2e.conftest import Stack
from tests.e2e.test_tasks_lifecycle import funded, wait_final


def keyed(stack: Stack, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {'x-api-key': key, **kwargs.pop('headers', {})}
    return stack.http.request(method, path, headers=headers, **kwargs)


def test_an_api_key_works_within_its_scopes_only_and_stops_when_revoked(stack: Stack):
    # Given an account with credits, and a key for its server that may create and read tasks
    user = funded(stack, 20)
    created = stack.invoke(
        'ManageApiKeysFunction',
        {'action': 'create', 'account_id': user.account_id, 'name': 'render server', 'scopes': ['tasks:write']},
    )
    key = created['api_key']
    assert key.startswith('ak_') and created['scopes'] == ['tasks:write'] and created['revoked_at'] is None
    # When the server creates a task with the key
    task = keyed(
        stack,
        key,
        'POST',
        '/v1/tasks',
        json={'model': 'mock/image', 'input': {'prompt': 'a red fox'}},
        headers={'Idempotency-Key': uuid.uuid4().hex},
    )
    # Then it is the account's task, as with the user's own token
    assert task.status_code == 202, task.text
    assert wait_final(user, task.json()['id'])['status'] == 'succeeded'
    # And the key works nowhere its scopes do not reach: 403 on routes that take keys, 401 on those that don't
    assert keyed(stack, key, 'GET', '/v1/tasks').status_code == 403
    assert keyed(stack, key, 'GET', '/v1/tasks').json()['error']['code'] == 'insufficient_scope'
    assert keyed(stack, key, 'GET', '/v1/ledger').status_code == 403
    assert keyed(stack, key, 'GET', '/v1/me').status_code == 403
    assert keyed(stack, key, 'POST', '/v1/checkout', json={'pack_id': 'pack_100'}).status_code == 401
    assert keyed(stack, key, 'POST', '/v1/auth/logout').status_code == 401
    # And ops list it without the key itself, then revoke it: it stops at once
    listed = stack.invoke('ManageApiKeysFunction', {'action': 'list', 'account_id': user.account_id})
    assert [k['key_id'] for k in listed['keys']] == [created['key_id']]
    assert key not in str(listed)
    stack.invoke(
        'ManageApiKeysFunction', {'action': 'revoke', 'account_id': user.account_id, 'key_id': created['key_id']}
    )
    again = keyed(
        stack,
        key,
        'POST',
        '/v1/tasks',
        json={'model': 'mock/image', 'input': {'prompt': 'x'}},
        headers={'Idempotency-Key': uuid.uuid4().hex},
    )
    assert again.status_code == 401 and again.json()['error']['code'] == 'invalid_api_key'


def test_a_read_key_reads_and_a_made_up_key_is_401(stack: Stack):
    user = funded(stack, 5)
    created = stack.invoke(
        'ManageApiKeysFunction',
        {
            'action': 'create',
            'account_id': user.account_id,
            'name': 'dashboard',
            'scopes': ['ledger:read', 'account:read'],
        },
    )
    me = keyed(stack, created['api_key'], 'GET', '/v1/me')
    assert me.status_code == 200 and me.json()['account_id'] == user.account_id
    ledger = keyed(stack, created['api_key'], 'GET', '/v1/ledger')
    assert ledger.status_code == 200 and [e['amount'] for e in ledger.json()['items']] == [5]
    forged = 'ak_0123456789abcdef_' + 'A' * 43
    assert keyed(stack, forged, 'GET', '/v1/me').status_code == 401
    assert keyed(stack, 'not-a-key', 'GET', '/v1/me').status_code == 401
