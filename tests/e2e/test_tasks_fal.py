"""fal.ai end to end on the offline stack: the real template against the fake fal (its queue API, ED25519-signed
webhooks and JWKS), over HTTP, IAM enforced. Each test asserts what a user (or ops) sees: the task's status,
the balance, the bytes in S3.

``fal/flux-dev`` is the catalog's real model (a 300 s deadline, a 60 s wait for the webhook before it is
polled): a lost webhook is found by the first poll, a minute in. The deadline test moves the task's deadline
into the past, as the passing of time would, so that the sweeper ends it in seconds rather than minutes.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from atelier.tasks.store import task_key, ts
from infra.local.fake_fal import FakeFal
from tests.e2e.conftest import Stack, User
from tests.e2e.test_tasks_lifecycle import balance, create, entries, funded, wait_final

pytestmark = pytest.mark.stack

FLUX = 'fal/flux-dev'
#: fal/flux-dev: 3 credits an image, x2 at 1024x1024 (the default size).
IMAGE_CREDITS = 6


def fake_fal(stack: Stack) -> FakeFal:
    service = stack.server.services['fal']
    assert isinstance(service, FakeFal)
    return service


def task_item(stack: Stack, task_id: str) -> dict[str, Any]:
    """The task as ops read it in DynamoDB (the console, or the banner's credentials)."""
    table = stack.physical_id('TasksTable')
    item: dict[str, Any] = stack.client('dynamodb').get_item(TableName=table, Key=task_key(task_id))['Item']
    return item


def request_of(stack: Stack, task_id: str) -> str:
    return str(task_item(stack, task_id)['provider_job_id']['S'])


def wait_status(user: User, task_id: str, statuses: set[str], timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (task := user.get(f'/v1/tasks/{task_id}').json())['status'] not in statuses:
        assert time.monotonic() < deadline, f'task still {task["status"]}'
        time.sleep(0.1)
    return task  # type: ignore[no-any-return]


def post_fal_webhook(stack: Stack, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return stack.http.post(
        '/webhooks/providers/fal', content=body, headers={'content-type': 'application/json', **headers}
    )


def test_models_offline_list_the_fal_models(stack: Stack) -> None:
    models = {m['id']: m for m in stack.sign_in().get('/v1/models').json()['items']}
    assert {'fal/flux-dev', 'fal/kling-video'} <= models.keys()
    assert models[FLUX]['provider'] == 'fal'


def test_a_fal_task_succeeds_and_its_images_are_stored_in_s3(stack: Stack) -> None:
    # Given a funded user
    user = funded(stack, 20)
    # When they run fal/flux-dev for two images
    created = create(user, FLUX, prompt='a lighthouse at dusk', num_images=2)
    assert created.status_code == 202, created.text
    task = wait_final(user, created.json()['id'])
    # Then it succeeded and charged exactly its price
    assert task['status'] == 'succeeded', task
    assert task['credits'] == {'estimated': 12, 'held': 12, 'charged': 12, 'refunded': 0}
    assert task['queue_position'] is None
    assert {kind for kind, _ in entries(user, task['id'])} == {'hold', 'capture'}
    assert balance(user) == {'available': 8, 'held': 0}
    # And the outputs in S3 are fal's bytes, hash for hash
    fal = fake_fal(stack)
    request_id = request_of(stack, task['id'])
    stored = json.loads(task_item(stack, task['id'])['outputs']['S'])
    assert len(task['outputs']) == len(stored) == 2
    for n, (output, record) in enumerate(zip(task['outputs'], stored, strict=True)):
        served = httpx.get(output['url'])
        expected = fal.file(request_id, n, 'png')
        assert served.status_code == 200 and served.content == expected
        assert output['content_type'] == 'image/png' and output['size'] == len(served.content)
        assert record['sha256'] == hashlib.sha256(served.content).hexdigest()
    # And fal was asked the way fal documents: its queue, our webhook, our deadline as its start timeout
    [(model, headers, query, body)] = [s for s in fal.submits if s[3].get('prompt') == 'a lighthouse at dusk']
    assert model == 'fal-ai/flux/dev' and headers['authorization'] == 'Key fal_atelier_local'
    assert query['fal_webhook'] == f'{stack.url}/webhooks/providers/fal'
    assert 0 < int(headers['x-fal-request-timeout']) <= 300
    assert body['image_size'] == 'square_hd' and body['num_images'] == 2
    # And the settled task keeps fal's cost signal (ops: margin)
    assert json.loads(task_item(stack, task['id'])['provider_cost']['S']) == {
        'unit': 'fal_billable_units',
        'amount': 2.0,
    }


def test_an_error_webhook_with_a_null_payload_fails_the_task_and_refunds_it(stack: Stack) -> None:
    user = funded(stack, 20)
    task = wait_final(user, create(user, FLUX, prompt='fal:error-null a cat').json()['id'])
    assert task['status'] == 'failed'
    assert task['error'] == {'code': 'provider_error', 'message': 'The provider failed to generate the output.'}
    assert task['credits'] == {
        'estimated': IMAGE_CREDITS,
        'held': IMAGE_CREDITS,
        'charged': 0,
        'refunded': IMAGE_CREDITS,
    }
    assert task['outputs'] == []
    assert balance(user) == {'available': 20, 'held': 0}
    request_id = request_of(stack, task['id'])
    assert any(d[0] == request_id and d[1] == 'ERROR' and d[2] == 200 for d in fake_fal(stack).deliveries)


@pytest.mark.slow
def test_lost_webhooks_are_found_by_polling_a_success_and_a_completed_then_422(stack: Stack) -> None:
    # Given two fal requests whose webhooks never come: one succeeds, one is COMPLETED and its result is a 422
    user = funded(stack, 20)
    ok = create(user, FLUX, prompt='fal:no-webhook a harbour').json()['id']
    refused = create(user, FLUX, prompt='fal:no-webhook fal:422 a harbour').json()['id']
    # When the wait for the webhook ends (60 s for flux-dev), the poll finds how each ended
    done = {task_id: wait_final(user, task_id, timeout=150) for task_id in (ok, refused)}
    # Then the success is delivered and charged, the 422 failed and refunded in full
    assert done[ok]['status'] == 'succeeded' and done[ok]['credits']['charged'] == IMAGE_CREDITS
    assert httpx.get(done[ok]['outputs'][0]['url']).content.startswith(b'\x89PNG')
    assert done[refused]['status'] == 'failed'
    assert done[refused]['error']['code'] == 'provider_rejected_input'
    assert done[refused]['credits']['refunded'] == IMAGE_CREDITS
    assert balance(user) == {'available': 20 - IMAGE_CREDITS, 'held': 0}
    # And fal sent no webhook for either
    requests = {request_of(stack, ok), request_of(stack, refused)}
    assert [d for d in fake_fal(stack).deliveries if d[0] in requests] == []
    # And the 422 is kept as a failure fal may have billed (its final word on the task, for ops)
    state = json.loads(task_item(stack, refused)['provider_state']['S'])
    assert state['charged_by_provider'] is True


def test_duplicate_and_out_of_order_webhooks_charge_once(stack: Stack) -> None:
    user = funded(stack, 20)
    task = wait_final(user, create(user, FLUX, prompt='a red kite').json()['id'])
    assert task['status'] == 'succeeded'
    fal = fake_fal(stack)
    request_id = request_of(stack, task['id'])
    # fal delivers the final webhook again (a retry), and an ERROR for the same request arrives late
    assert fal.redeliver(request_id) == 200
    late_error = {'request_id': request_id, 'gateway_request_id': request_id, 'status': 'ERROR', 'payload': None}
    assert fal.redeliver(request_id, late_error) == 200
    # Nothing changed: succeeded, charged once, one capture
    after = user.get(f'/v1/tasks/{task["id"]}').json()
    assert (after['status'], after['credits']) == ('succeeded', task['credits'])
    assert entries(user, task['id']) == [('capture', 0), ('hold', -IMAGE_CREDITS)]
    assert balance(user) == {'available': 20 - IMAGE_CREDITS, 'held': 0}


def test_forged_stale_and_unsigned_webhooks_are_401_and_change_nothing(stack: Stack) -> None:
    # Given a task waiting in fal's queue
    user = funded(stack, 20)
    task_id = create(user, FLUX, prompt='fal:queued a forged fox').json()['id']
    waiting = wait_status(user, task_id, {'submitted'})
    fal = fake_fal(stack)
    request_id = request_of(stack, task_id)
    body = json.dumps({'request_id': request_id, 'gateway_request_id': request_id, 'status': 'ERROR', 'payload': None})
    raw = body.encode()
    # When someone posts webhooks for it: signed by another key, signed by fal's key 10 minutes ago, unsigned
    forged = post_fal_webhook(stack, raw, fal.signed_headers(raw, request_id, key=Ed25519PrivateKey.generate()))
    stale = post_fal_webhook(stack, raw, fal.signed_headers(raw, request_id, timestamp=int(time.time()) - 600))
    unsigned = post_fal_webhook(stack, raw, {})
    # And one fal signed, but for another fal account than this deployment's (FalUserId)
    foreign = post_fal_webhook(stack, raw, fal.signed_headers(raw, request_id, user_id='someone-else'))
    # Then each is 401, and the task is as it was: waiting, its credits held
    for response in (forged, stale, unsigned, foreign):
        assert response.status_code == 401, response.text
        assert response.json()['error']['code'] == 'invalid_signature'
    now = user.get(f'/v1/tasks/{task_id}').json()
    assert (now['status'], now['credits'], now['error']) == ('submitted', waiting['credits'], None)
    assert balance(user) == {'available': 20 - IMAGE_CREDITS, 'held': IMAGE_CREDITS}
    user.post(f'/v1/tasks/{task_id}/cancel')
    assert wait_final(user, task_id)['status'] == 'canceled'


def test_a_webhook_signed_with_a_rotated_key_is_accepted(stack: Stack) -> None:
    # Given the stack has verified fal webhooks with fal's current key
    user = funded(stack, 20)
    assert wait_final(user, create(user, FLUX, prompt='before the rotation').json()['id'])['status'] == 'succeeded'
    # When fal rotates its signing key (a new kid in its JWKS)
    fal = fake_fal(stack)
    kid = fal.rotate_key()
    task = wait_final(user, create(user, FLUX, prompt='after the rotation').json()['id'])
    # Then the webhook signed with the new key is accepted (the JWKS is fetched again) and the task succeeds
    assert task['status'] == 'succeeded'
    request_id = request_of(stack, task['id'])
    assert any(d[0] == request_id and d[2] == 200 and d[3] == kid for d in fal.deliveries), fal.deliveries[-5:]
    assert balance(user) == {'available': 20 - 2 * IMAGE_CREDITS, 'held': 0}


def test_cancel_while_queued_shows_the_queue_position_then_refunds_everything(stack: Stack) -> None:
    # Given a task waiting in fal's queue: the user sees its place in the queue
    user = funded(stack, 20)
    task_id = create(user, FLUX, prompt='fal:queued a patient fox').json()['id']
    waiting = wait_status(user, task_id, {'submitted'})
    assert isinstance(waiting['queue_position'], int) and waiting['queue_position'] >= 0
    # When the user cancels: fal removes it from its queue
    response = user.post(f'/v1/tasks/{task_id}/cancel')
    assert response.status_code == 202, response.text
    task = wait_final(user, task_id)
    # Then it is canceled, every credit back, and fal never ran it
    assert task['status'] == 'canceled' and task['queue_position'] is None
    assert task['credits']['refunded'] == IMAGE_CREDITS and task['credits']['charged'] == 0
    assert balance(user) == {'available': 20, 'held': 0}
    assert fake_fal(stack).requests[request_of(stack, task_id)].attempts == 0


def test_cancel_while_running_lets_fal_finish_and_the_result_is_charged(stack: Stack) -> None:
    user = funded(stack, 20)
    task_id = create(user, FLUX, prompt='fal:slow a running fox').json()['id']
    # fal reports IN_PROGRESS only on a poll; the request is running at fal once it has left the queue
    fal = fake_fal(stack)
    wait_status(user, task_id, {'submitted', 'running'})
    deadline = time.monotonic() + 10
    while fal.requests[request_of(stack, task_id)].status != 'IN_PROGRESS':
        assert time.monotonic() < deadline
        time.sleep(0.05)
    canceled = user.post(f'/v1/tasks/{task_id}/cancel')
    assert canceled.status_code == 202 and canceled.json()['cancel_requested'] is True
    assert canceled.json()['status'] in {'submitted', 'running'}  # fal only got a cancellation request
    task = wait_final(user, task_id)
    # This app finished its work: the user gets the result, charged like any success
    assert task['status'] == 'succeeded' and task['credits']['charged'] == IMAGE_CREDITS
    assert httpx.get(task['outputs'][0]['url']).content.startswith(b'\x89PNG')
    assert balance(user) == {'available': 20 - IMAGE_CREDITS, 'held': 0}


def test_an_internal_retry_at_fal_is_one_task_charged_once(stack: Stack) -> None:
    user = funded(stack, 20)
    task = wait_final(user, create(user, FLUX, prompt='fal:retry a stubborn fox').json()['id'])
    assert task['status'] == 'succeeded'
    fal = fake_fal(stack)
    request = fal.requests[request_of(stack, task['id'])]
    assert request.attempts == 2 and request.gateway_request_id != request.request_id
    assert entries(user, task['id']) == [('capture', 0), ('hold', -IMAGE_CREDITS)]
    assert balance(user) == {'available': 20 - IMAGE_CREDITS, 'held': 0}


def pass_deadline(stack: Stack, task_id: str) -> None:
    """Move the task's deadline into the past, beyond the sweeper's grace, as time would move it."""
    past = datetime.now(UTC) - timedelta(seconds=120)
    stack.client('dynamodb').update_item(
        TableName=stack.physical_id('TasksTable'),
        Key=task_key(task_id),
        UpdateExpression='SET deadline_at = :deadline, gsi2sk = :sk',
        ExpressionAttributeValues={':deadline': {'S': ts(past)}, ':sk': {'S': f'{ts(past)}#{task_id}'}},
    )


def test_a_missed_deadline_expires_the_task_refunds_it_and_stops_fal(stack: Stack) -> None:
    # Given a task stuck in fal's queue
    user = funded(stack, 20)
    task_id = create(user, FLUX, prompt='fal:queued a late fox').json()['id']
    wait_status(user, task_id, {'submitted'})
    # When its deadline passes
    pass_deadline(stack, task_id)
    task = wait_final(user, task_id, timeout=30)
    # Then it expired, every credit back, and fal was told to drop the request
    assert task['status'] == 'expired' and task['error']['code'] == 'deadline_exceeded'
    assert task['credits']['refunded'] == IMAGE_CREDITS
    assert balance(user) == {'available': 20, 'held': 0}
    request = fake_fal(stack).requests[request_of(stack, task_id)]
    assert request.status == 'COMPLETED' and request.result is not None and request.result[0] == 499


def test_a_result_after_the_task_expired_keeps_fals_cost_and_moves_no_credit(stack: Stack) -> None:
    # Given a task whose request is running at fal
    user = funded(stack, 20)
    task_id = create(user, FLUX, prompt='fal:held a late finisher').json()['id']
    fal = fake_fal(stack)
    wait_status(user, task_id, {'submitted', 'running'})
    request_id = request_of(stack, task_id)
    deadline = time.monotonic() + 10
    while fal.requests[request_id].status != 'IN_PROGRESS':
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # When the task's deadline passes (fal only gets a cancellation request: the app runs on) ...
    pass_deadline(stack, task_id)
    expired = wait_final(user, task_id, timeout=90)  # the sweep ends it; a loaded CI machine needed more than 30 s
    assert expired['status'] == 'expired' and expired['credits']['refunded'] == IMAGE_CREDITS
    # ... and then fal finishes the request and reports it
    fal.finish(request_id)
    deadline = time.monotonic() + 20
    while 'provider_cost' not in (item := task_item(stack, task_id)):
        assert time.monotonic() < deadline, 'no cost recorded'
        time.sleep(0.1)
    # Then ops see what fal billed for it, and the user's task and credits are as settled
    assert json.loads(item['provider_cost']['S']) == {'unit': 'fal_billable_units', 'amount': 1.0}
    after = user.get(f'/v1/tasks/{task_id}').json()
    assert (after['status'], after['credits'], after['outputs']) == ('expired', expired['credits'], [])
    assert balance(user) == {'available': 20, 'held': 0}


def test_images_fals_safety_checker_blocked_are_neither_stored_nor_charged(stack: Stack) -> None:
    # Given two tasks for two images: fal blocks the first image of one, both images of the other
    user = funded(stack, 30)
    partly = wait_final(user, create(user, FLUX, prompt='fal:nsfw-first a beach', num_images=2).json()['id'])
    wholly = wait_final(user, create(user, FLUX, prompt='fal:nsfw a beach', num_images=2).json()['id'])
    # Then the first delivers and charges one image: the one fal did not black out
    assert partly['status'] == 'succeeded' and len(partly['outputs']) == 1
    assert partly['credits'] == {'estimated': 12, 'held': 12, 'charged': IMAGE_CREDITS, 'refunded': 12 - IMAGE_CREDITS}
    expected = fake_fal(stack).file(request_of(stack, partly['id']), 1, 'png')
    assert httpx.get(partly['outputs'][0]['url']).content == expected
    # And the second failed with a stable code, nothing stored, every credit back
    assert wholly['status'] == 'failed' and wholly['outputs'] == []
    assert wholly['error']['code'] == 'content_filtered'
    assert wholly['credits']['refunded'] == 12
    assert balance(user) == {'available': 30 - IMAGE_CREDITS, 'held': 0}


def test_an_early_webhook_is_503_an_unknown_request_404_and_neither_changes_anything(stack: Stack) -> None:
    # Given a task whose request is running at fal
    user = funded(stack, 20)
    task_id = create(user, FLUX, prompt='fal:held an early bird').json()['id']
    fal = fake_fal(stack)
    wait_status(user, task_id, {'submitted', 'running'})
    request_id = request_of(stack, task_id)
    deadline = time.monotonic() + 10
    while fal.requests[request_id].status != 'IN_PROGRESS':
        assert time.monotonic() < deadline
        time.sleep(0.05)
    before = user.get(f'/v1/tasks/{task_id}').json()
    # When a signed webhook says it is done although its result is not ready (fal answers 400 for it)
    early = json.dumps({'request_id': request_id, 'status': 'OK', 'payload': {'images': []}}).encode()
    answered = post_fal_webhook(stack, early, fal.signed_headers(early, request_id))
    # And a signed webhook names a request no task made
    unknown = json.dumps({'request_id': 'req-nobody', 'status': 'OK', 'payload': {'images': []}}).encode()
    stray = post_fal_webhook(stack, unknown, fal.signed_headers(unknown, 'req-nobody'))
    # Then fal is asked to retry the first (503) and told the second is unknown (404); the task is as it was
    assert answered.status_code == 503, answered.text
    assert stray.status_code == 404, stray.text
    now = user.get(f'/v1/tasks/{task_id}').json()
    assert (now['status'], now['credits'], now['outputs']) == (before['status'], before['credits'], [])
    # And when fal finishes, its own webhook settles the task from the result
    fal.finish(request_id)
    task = wait_final(user, task_id)
    assert task['status'] == 'succeeded' and task['credits']['charged'] == IMAGE_CREDITS


def test_an_output_on_a_host_fal_does_not_serve_from_is_refused_and_refunded(stack: Stack) -> None:
    # Given a funded user, and fal answering with outputs on a host that is not one of fal's CDN hosts
    user = funded(stack, 20)
    # When the task completes at fal
    task = wait_final(user, create(user, FLUX, prompt='fal:foreign-output a harbour').json()['id'])
    # Then it failed with a stable code and a message that does not repeat the provider's URL
    assert task['status'] == 'failed' and task['outputs'] == []
    assert task['error']['code'] == 'output_refused'
    assert 'example.net' not in task['error']['message']
    # And every credit came back
    assert task['credits'] == {
        'estimated': IMAGE_CREDITS,
        'held': IMAGE_CREDITS,
        'charged': 0,
        'refunded': IMAGE_CREDITS,
    }
    assert balance(user) == {'available': 20, 'held': 0}
    # And nothing was stored under the task's outputs
    account_id = task_item(stack, task['id'])['account_id']['S']
    prefix = f'outputs/{account_id}/{task["id"]}/'
    listed = stack.client('s3').list_objects_v2(Bucket=stack.physical_id('MediaBucket'), Prefix=prefix)
    assert listed.get('KeyCount', 0) == 0
