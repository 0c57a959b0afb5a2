"""RunPod serverless end to end on the offline stack: the real template against the fake RunPod (its /run, /status
and /cancel, unsigned webhooks), over HTTP, IAM enforced. Each test asserts what a user (or ops) sees: the task's
status, the balance, the bytes in S3.

``runpod/image-worker`` is offered because the offline stack names an endpoint for it (``RunPodEndpoints``); it
waits 15 s for the webhook before it polls, so a lost webhook is found about 15 s in.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import pytest

from atelier.providers.runpod.client import TTL_MARGIN_MS
from infra.local.fake_runpod import LOCAL_ENDPOINT, FakeRunPod
from tests.e2e.conftest import Stack
from tests.e2e.test_tasks_fal import request_of, task_item, wait_status
from tests.e2e.test_tasks_lifecycle import balance, create, entries, funded, wait_final

pytestmark = pytest.mark.stack

WORKER = 'runpod/image-worker'
#: runpod/image-worker: 2 credits an image, x2 at 1024x1024 (the default size).
IMAGE_CREDITS = 4


def fake_runpod(stack: Stack) -> FakeRunPod:
    service = stack.server.services['runpod']
    assert isinstance(service, FakeRunPod)
    return service


def wait_job(runpod: FakeRunPod, job_id: str, status: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while runpod.jobs[job_id].status != status:
        assert time.monotonic() < deadline, runpod.jobs[job_id].status
        time.sleep(0.1)


def post_runpod_webhook(stack: Stack, body: dict[str, Any]) -> httpx.Response:
    return stack.http.post('/webhooks/providers/runpod', json=body)


def test_models_offline_list_the_runpod_worker(stack: Stack) -> None:
    models = {m['id']: m for m in stack.sign_in().get('/v1/models').json()['items']}
    assert models[WORKER]['provider'] == 'runpod'


def test_a_runpod_task_succeeds_its_images_land_in_s3_and_its_execution_time_is_kept(stack: Stack) -> None:
    # Given a funded user
    user = funded(stack, 20)
    # When they run the worker for two images
    created = create(user, WORKER, prompt='a harbour at dawn', num_images=2)
    assert created.status_code == 202, created.text
    task = wait_final(user, created.json()['id'])
    # Then it succeeded and charged exactly its price
    assert task['status'] == 'succeeded', task
    charged = 2 * IMAGE_CREDITS
    assert task['credits'] == {'estimated': charged, 'held': charged, 'charged': charged, 'refunded': 0}
    assert balance(user) == {'available': 20 - charged, 'held': 0}
    # And the outputs in S3 are the worker's bytes, hash for hash
    runpod = fake_runpod(stack)
    job_id = request_of(stack, task['id'])
    stored = json.loads(task_item(stack, task['id'])['outputs']['S'])
    assert len(task['outputs']) == len(stored) == 2
    for n, (output, record) in enumerate(zip(task['outputs'], stored, strict=True)):
        served = httpx.get(output['url'])
        assert served.status_code == 200 and served.content == runpod.file(job_id, n)
        assert output['content_type'] == 'image/png' and output['size'] == len(served.content)
        assert record['sha256'] == hashlib.sha256(served.content).hexdigest()
    # And RunPod was asked the way RunPod documents: the endpoint, our webhook, our deadline as its policy
    [(endpoint, headers, body)] = [r for r in runpod.runs if r[2]['input'].get('prompt') == 'a harbour at dawn']
    assert endpoint == LOCAL_ENDPOINT and headers['authorization'] == 'Bearer runpod_atelier_local'
    assert body['webhook'] == f'{stack.url}/webhooks/providers/runpod'
    # (executionTimeout: the time left; ttl: that plus the margin that keeps the job findable past the deadline)
    policy = body['policy']
    assert (
        10_000 <= policy['executionTimeout'] <= 600_000 and policy['ttl'] == policy['executionTimeout'] + TTL_MARGIN_MS
    )
    # And the settled task keeps RunPod's executionTime and delayTime (ops: margin)
    cost = json.loads(task_item(stack, task['id'])['provider_cost']['S'])
    assert cost['unit'] == 'runpod_execution_ms' and cost['amount'] == runpod.jobs[job_id].view()['executionTime']
    assert cost['delay_ms'] == runpod.jobs[job_id].view()['delayTime']


def test_a_failed_worker_fails_the_task_and_refunds_it(stack: Stack) -> None:
    user = funded(stack, 20)
    task = wait_final(user, create(user, WORKER, prompt='runpod:fail a cat').json()['id'])
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


def test_a_lost_webhook_is_found_by_polling(stack: Stack) -> None:
    user = funded(stack, 20)
    task_id = create(user, WORKER, prompt='runpod:no-webhook a boat').json()['id']
    task = wait_final(user, task_id, timeout=60)
    assert task['status'] == 'succeeded' and task['credits']['charged'] == IMAGE_CREDITS
    job_id = request_of(stack, task_id)
    assert [d for d in fake_runpod(stack).deliveries if d[0] == job_id] == []  # no webhook was ever sent
    assert httpx.get(task['outputs'][0]['url']).content == fake_runpod(stack).file(job_id, 0)
    assert balance(user) == {'available': 20 - IMAGE_CREDITS, 'held': 0}


def test_a_forged_webhook_for_a_running_job_changes_nothing(stack: Stack) -> None:
    # Given a task whose worker is running
    user = funded(stack, 20)
    task_id = create(user, WORKER, prompt='runpod:held a fox').json()['id']
    wait_status(user, task_id, {'submitted', 'running'})
    runpod = fake_runpod(stack)
    job_id = request_of(stack, task_id)
    wait_job(runpod, job_id, 'IN_PROGRESS')
    # When someone posts an unsigned webhook claiming it completed, with outputs of their choosing
    forged = {
        'id': job_id,
        'status': 'COMPLETED',
        'executionTime': 1,
        'output': {'images': [f'{runpod.base_url}/files/{job_id}/0.png', 'https://evil.example/x.png']},
    }
    answered = post_runpod_webhook(stack, forged)
    # Then RunPod's own status decides: the task is still running, nothing charged, nothing stored
    assert answered.status_code == 200, answered.text
    task = user.get(f'/v1/tasks/{task_id}').json()
    assert task['status'] in {'submitted', 'running'} and task['outputs'] == []
    assert balance(user) == {'available': 20 - IMAGE_CREDITS, 'held': IMAGE_CREDITS}
    assert {kind for kind, _ in entries(user, task_id)} == {'hold'}
    # And a webhook for a job that is not ours is 404
    assert post_runpod_webhook(stack, {**forged, 'id': 'not-ours-u1'}).status_code == 404
    # And when the worker really finishes, the task succeeds with the worker's image only
    runpod.finish(job_id)
    task = wait_final(user, task_id)
    assert task['status'] == 'succeeded' and len(task['outputs']) == 1
    assert httpx.get(task['outputs'][0]['url']).content == runpod.file(job_id, 0)
    assert balance(user) == {'available': 20 - IMAGE_CREDITS, 'held': 0}


def test_cancel_while_queued_refunds_everything_and_the_job_never_ran(stack: Stack) -> None:
    user = funded(stack, 20)
    task_id = create(user, WORKER, prompt='runpod:queued a lamp').json()['id']
    wait_status(user, task_id, {'submitted'})
    response = user.post(f'/v1/tasks/{task_id}/cancel')
    assert response.status_code == 202, response.text
    task = wait_final(user, task_id)
    assert task['status'] == 'canceled'
    assert task['credits']['charged'] == 0 and task['credits']['refunded'] == IMAGE_CREDITS
    assert balance(user) == {'available': 20, 'held': 0}
    job = fake_runpod(stack).jobs[request_of(stack, task_id)]
    assert job.status == 'CANCELLED' and job.started_at is None


def test_a_duplicate_webhook_charges_once(stack: Stack) -> None:
    user = funded(stack, 20)
    task = wait_final(user, create(user, WORKER, prompt='a quiet street').json()['id'])
    assert task['status'] == 'succeeded'
    runpod = fake_runpod(stack)
    job_id = request_of(stack, task['id'])
    assert runpod.redeliver(job_id) == 200
    assert runpod.redeliver(job_id) == 200
    after = user.get(f'/v1/tasks/{task["id"]}').json()
    assert after['credits'] == task['credits'] and after['status'] == 'succeeded'
    assert sorted(kind for kind, _ in entries(user, task['id'])) == ['capture', 'hold']
    assert balance(user) == {'available': 20 - IMAGE_CREDITS, 'held': 0}
