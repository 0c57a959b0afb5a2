"""Account deletion over HTTP on the offline stack (issue 10; App Store Review Guideline 5.1.1(v)): DELETE /v1/me
ends every token at once; the queued purge ends the running task (refunded), deletes the outputs, uploads and raw
payment bodies, releases the device; the ledger still balances; another account is untouched."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, User, next_address
from tests.e2e.test_payments_webhooks import post_rc
from tests.e2e.test_tasks_lifecycle import balance, create, run
from tests.support_payments import rc_purchase
from tests.utils import wait_until

pytestmark = pytest.mark.stack

PNG = b'\x89PNG\r\n\x1a\n' + b'0' * 100


def upload(user: User) -> str:
    form = user.post('/v1/uploads', json={'content_type': 'image/png', 'size': len(PNG)}).json()
    posted = httpx.post(
        form['upload']['url'], data=form['upload']['fields'], files={'file': ('in.png', PNG, 'image/png')}
    )
    assert posted.status_code in {200, 204}, posted.text
    return str(form['key'])


def keys(stack: Stack, prefix: str) -> list[str]:
    listed = stack.client('s3').list_objects_v2(Bucket=stack.physical_id('MediaBucket'), Prefix=prefix)
    return [item['Key'] for item in listed.get('Contents', [])]


def item(stack: Stack, table: str, pk: str, sk: str) -> dict[str, Any] | None:
    found = stack.client('dynamodb').get_item(
        TableName=stack.physical_id(table), Key={'pk': {'S': pk}, 'sk': {'S': sk}}, ConsistentRead=True
    )
    return found.get('Item')


def test_delete_me_ends_the_account_and_removes_its_data_while_the_ledger_still_balances(stack: Stack):
    # Given a user who bought credits in the app (a raw RevenueCat body names the account) ...
    user, other = stack.sign_in(), stack.sign_in()
    purchase = rc_purchase('NON_RENEWING_PURCHASE', user.account_id, 'credits_100', f'txn_{uuid.uuid4().hex}')
    assert post_rc(stack, purchase).status_code == 200
    event_id = purchase['event']['id']
    assert item(stack, 'EventsTable', f'EVENT#revenuecat#{event_id}', 'RAW') is not None
    # ... has a finished task with its output in S3, an upload, and a task running at the provider
    assert run(user, 'mock/image')['status'] == 'succeeded'
    upload(user)
    running = create(user, 'mock/slow').json()['id']
    assert wait_until(lambda: user.get(f'/v1/tasks/{running}').json()['status'] in {'submitted', 'running'})
    assert balance(user) == {'available': 100 - 4 - 4, 'held': 4}
    assert len(keys(stack, f'outputs/{user.account_id}/')) == 1 and len(keys(stack, f'uploads/{user.account_id}/')) == 1
    kept = upload(other)
    # ... and an API key for its server
    key = stack.invoke(
        'ManageApiKeysFunction',
        {'action': 'create', 'account_id': user.account_id, 'name': 'server', 'scopes': ['account:read']},
    )['api_key']
    assert stack.http.get('/v1/me', headers={'x-api-key': key}).status_code == 200

    # When the user deletes the account
    deleted = stack.http.delete('/v1/me', headers={'authorization': f'Bearer {user.token}'})

    # Then the deletion is under way, and every token of the account is refused at once
    assert deleted.status_code == 202, deleted.text
    assert deleted.json()['account_id'] == user.account_id and deleted.json()['status'] in {'deleting', 'deleted'}
    assert user.get('/v1/me').status_code == 401
    assert user.get('/v1/tasks').status_code == 401
    refreshed = stack.http.post('/v1/auth/refresh', json={'refresh_token': user.refresh_token})
    assert (refreshed.status_code, refreshed.json()['error']['code']) == (401, 'session_revoked')
    assert stack.http.delete('/v1/me', headers={'authorization': f'Bearer {user.token}'}).status_code == 401
    assert stack.http.get('/v1/me', headers={'x-api-key': key}).status_code == 401  # its API keys too

    # And the queued purge completes: the account is marked deleted
    def purged() -> bool:
        account = item(stack, 'LedgerTable', f'ACCT#{user.account_id}', 'ACCOUNT') or {}
        return account.get('deletion', {}).get('S') == 'deleted'

    assert wait_until(purged, timeout=30), 'the purge did not finish'
    # Its outputs and uploads are gone from S3 (each key authorized for the purge's role); another account's stays
    assert keys(stack, f'outputs/{user.account_id}/') == keys(stack, f'uploads/{user.account_id}/') == []
    deletes = [
        d.resource.split(':::', 1)[1].split('/', 1)[1]
        for d in stack.server.stack.iam.decisions
        if d.action == 's3:DeleteObject' and d.allowed and user.account_id in d.resource
    ]
    assert {key.split('/', 1)[0] for key in deletes} == {'outputs', 'uploads'}
    assert keys(stack, f'uploads/{other.account_id}/') == [kept]
    # Its running task ended canceled, refunded, and keeps no prompt
    task = item(stack, 'TasksTable', f'TASK#{running}', 'TASK') or {}
    assert (task['status']['S'], task['refunded']['N'], task['input']['S']) == ('canceled', '4', '{}')
    # The raw payment body is gone; the record (ids, amounts) stays
    assert item(stack, 'EventsTable', f'EVENT#revenuecat#{event_id}', 'RAW') is None
    assert item(stack, 'EventsTable', f'EVENT#revenuecat#{event_id}', 'EVENT') is not None
    # The ledger keeps the account's entries, holds nothing, and balances
    account = item(stack, 'LedgerTable', f'ACCT#{user.account_id}', 'ACCOUNT') or {}
    assert (account['available']['N'], account['held']['N']) == (str(100 - 4), '0')
    assert stack.invoke('ReconcileLedgerFunction', {'account_ids': [user.account_id]}) == {
        'checked': 1,
        'mismatched': [],
    }
    # The same device id signs in to a new, empty account, never the deleted one
    again = stack.post_from(next_address(), '/v1/auth/device', json={'device_id': user.device_id})
    assert again.status_code == 200, again.text
    assert again.json()['account_id'] != user.account_id and again.json()['device_secret']
    with_secret = stack.post_from(
        next_address(), '/v1/auth/device', json={'device_id': user.device_id, 'device_secret': user.device_secret}
    )
    assert with_secret.status_code == 401
    # And the other account still works
    assert other.get('/v1/me').status_code == 200


def test_ops_delete_an_account_with_the_test_event_and_a_second_run_finds_nothing(stack: Stack):
    # Given an account with an upload (a deletion asked for through support, or one whose message was dead-lettered)
    user = stack.sign_in()
    upload(user)
    # When ops run DeleteAccountFunction with the sample event's shape
    report = stack.invoke('DeleteAccountFunction', {'account_id': user.account_id, 'recheck': True})
    # Then the account is deleted like DELETE /v1/me does it
    assert (report['status'], report['sessions_revoked'], report['objects_deleted']) == ('deleted', 1, 1)
    assert (report['devices_released'], report['identities_released']) == (1, 0)
    assert user.get('/v1/me').status_code == 401
    assert keys(stack, f'uploads/{user.account_id}/') == []
    # And running it again is harmless: nothing left to do
    again = stack.invoke('DeleteAccountFunction', {'account_id': user.account_id, 'recheck': True})
    counts = {k: v for k, v in again.items() if isinstance(v, int) and not isinstance(v, bool)}
    assert set(counts.values()) == {0} and again['status'] == 'deleted'
