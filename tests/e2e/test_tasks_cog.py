"""A self-hosted Cog model (a real Cog server on 127.0.0.1) driven through the whole offline stack."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from atelier.providers.mock.media import PNG_SIGNATURE
from tests.e2e.conftest import Stack
from tests.e2e.test_tasks_lifecycle import balance, create, entries, funded, wait_final


def test_a_cog_model_runs_end_to_end_and_its_pngs_land_in_s3(stack: Stack) -> None:
    # Given a funded user and the local Cog server's model in the catalog
    user = funded(stack, 10)
    models = {m['id'] for m in user.get('/v1/models').json()['items']}
    assert 'cog/echo-image' in models
    # When the user runs it for two images
    created = create(user, 'cog/echo-image', prompt='a lighthouse', num_images=2)
    assert created.status_code == 202, created.text
    task = wait_final(user, created.json()['id'])
    # Then it succeeded, its two PNGs are served from S3, and exactly its price was charged
    assert task['status'] == 'succeeded', task
    assert len(task['outputs']) == 2
    for output in task['outputs']:
        image = httpx.get(output['url'])
        assert image.status_code == 200 and image.content.startswith(PNG_SIGNATURE)
        assert output['size'] == len(image.content)
    assert task['credits']['charged'] == 2
    assert {kind for kind, _ in entries(user, task['id'])} == {'hold', 'capture'}
    assert balance(user) == {'available': 8, 'held': 0}


def test_a_failing_cog_prediction_is_refunded(stack: Stack) -> None:
    user = funded(stack, 10)
    task = wait_final(user, create(user, 'cog/echo-image', prompt='fail please').json()['id'])
    assert task['status'] == 'failed'
    assert task['credits']['refunded'] == task['credits']['held']
    assert balance(user) == {'available': 10, 'held': 0}


def test_a_cancel_cog_answers_404_waits_for_the_late_success_which_is_delivered_and_charged_once(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the webhook endpoint briefly unavailable to Cog (503: coglet retries a final webhook with backoff)
    gateway = stack.server.gateway
    handle = gateway.handle
    down = threading.Event()
    down.set()
    refused: list[dict[str, Any]] = []

    def flaky(
        method: str, raw_path: str, headers: dict[str, str], body: bytes, *rest: Any
    ) -> tuple[int, dict[str, str], bytes]:
        if down.is_set() and method == 'POST' and raw_path.startswith('/webhooks/providers/cog'):
            refused.append(json.loads(body))
            return 503, {'content-type': 'application/json'}, b'{"message":"Service Unavailable"}'
        return handle(method, raw_path, headers, body, *rest)

    monkeypatch.setattr(gateway, 'handle', flaky)
    user = funded(stack, 10)
    created = create(user, 'cog/echo-image', prompt='a lighthouse')
    assert created.status_code == 202, created.text
    task_id = created.json()['id']
    # And its prediction has succeeded: Cog has forgotten it, its final webhook not yet through
    deadline = time.monotonic() + 20
    while not any(r.get('id') == task_id and r.get('status') == 'succeeded' for r in refused):
        assert time.monotonic() < deadline, 'Cog sent no final webhook'
        time.sleep(0.02)
    # When the user cancels: Cog answers the cancel 404
    canceled = user.post(f'/v1/tasks/{task_id}/cancel')
    # Then the task is not canceled: it waits for Cog's final word, the credit still held
    assert canceled.status_code == 202, canceled.text
    assert canceled.json()['cancel_requested'] is True
    assert canceled.json()['status'] in {'submitted', 'running'}
    assert balance(user) == {'available': 9, 'held': 1}
    # When the endpoint is back and coglet's next try delivers the `succeeded` webhook
    down.clear()
    task = wait_final(user, task_id)
    # Then the user has the result, served from S3, charged once: hold captured, nothing refunded
    assert task['status'] == 'succeeded', task
    assert (task['credits']['charged'], task['credits']['refunded']) == (1, 0)
    [output] = task['outputs']
    image = httpx.get(output['url'])
    assert image.status_code == 200 and image.content.startswith(PNG_SIGNATURE)
    assert output['size'] == len(image.content)
    assert entries(user, task_id) == [('capture', 0), ('hold', -1)]
    assert balance(user) == {'available': 9, 'held': 0}
