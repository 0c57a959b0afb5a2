"""The RunPod adapter against the fake RunPod on 127.0.0.1: run, statuses, cost, cancel, unsigned webhooks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from atelier.catalog import load_catalog
from atelier.providers import Job, JobState, ProviderRejected, ProviderUnavailable, StartTooLate, Status
from atelier.providers.base import MalformedWebhook
from atelier.providers.journal import InMemoryJournal
from atelier.providers.registry import configured_providers
from atelier.providers.runpod.client import COST_UNIT, TTL_MARGIN_MS, RunPodProvider, _outputs
from infra.local.fake_runpod import FakeRunPod
from tests.support.webhooks import WebhookReceiver, receiving

TOKEN = 'runpod_atelier_test'
ENDPOINT = 'ep-test-1'
WORKER = load_catalog().get('runpod/image-worker')


@pytest.fixture
def runpod() -> Iterator[FakeRunPod]:
    server = FakeRunPod(token=TOKEN, time_scale=0.05)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def journal() -> InMemoryJournal:
    return InMemoryJournal()


@pytest.fixture
def provider(runpod: FakeRunPod, journal: InMemoryJournal) -> RunPodProvider:
    return RunPodProvider(runpod.base_url, endpoints={WORKER.id: ENDPOINT}, api_token=TOKEN, journal=journal)


def job(task_id: str = 'tsk_1', *, webhook: str = '', deadline: int = 600, **data: Any) -> Job:
    return Job(
        task_id=task_id,
        model_id=WORKER.id,
        provider_model=WORKER.provider_model,
        input={'prompt': 'a red fox', 'num_images': 1, **data},
        webhook_url=webhook,
        deadline_seconds=deadline,
    )


def until_final(provider: RunPodProvider, job_id: str, timeout: float = 5.0) -> JobState:
    deadline = time.monotonic() + timeout
    while not (state := provider.poll(job_id)).is_final:
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    return state


def until_status(runpod: FakeRunPod, job_id: str, status: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while runpod.jobs[job_id].status != status:
        assert time.monotonic() < deadline, runpod.jobs[job_id].status
        time.sleep(0.02)


def test_a_job_runs_on_its_endpoint_with_our_webhook_and_the_tasks_deadline_as_policy(
    provider: RunPodProvider, runpod: FakeRunPod
) -> None:
    state = provider.submit(
        job(webhook='https://api.example.com/webhooks/providers/runpod', deadline=300, num_images=2)
    )
    assert state.status is Status.SUBMITTED and state.raw_status == 'IN_QUEUE'
    [(endpoint, headers, body)] = runpod.runs
    assert endpoint == ENDPOINT and headers['authorization'] == f'Bearer {TOKEN}'
    assert body == {
        'input': {'prompt': 'a red fox', 'num_images': 2},
        'webhook': 'https://api.example.com/webhooks/providers/runpod',
        'policy': {'executionTimeout': 300_000, 'ttl': 300_000 + TTL_MARGIN_MS},
    }
    final = until_final(provider, state.provider_job_id)
    assert final.status is Status.SUCCEEDED and final.raw_status == 'COMPLETED'
    assert [o.url for o in final.outputs] == [
        f'{runpod.base_url}/files/{state.provider_job_id}/{n}.png' for n in range(2)
    ]
    assert {o.content_type for o in final.outputs} == {'image/png'}
    # executionTime and delayTime are RunPod's cost signal
    assert final.cost is not None and final.cost.unit == COST_UNIT and final.cost.amount > 0
    assert final.cost.delay_ms is not None


def test_a_second_submit_follows_the_job_on_record(provider: RunPodProvider, runpod: FakeRunPod) -> None:
    first = provider.submit(job())
    again = provider.submit(job())
    assert again.provider_job_id == first.provider_job_id and len(runpod.runs) == 1


def test_a_failed_worker_is_failed_and_billed(provider: RunPodProvider) -> None:
    state = until_final(provider, provider.submit(job(prompt='runpod:fail')).provider_job_id)
    assert state.status is Status.FAILED and state.error is not None
    assert state.error.code == 'provider_error' and 'CUDA' not in state.error.message  # the worker's text is logged
    assert state.charged_by_provider and state.cost is not None


def test_cancel_while_queued_is_canceled_and_never_ran(provider: RunPodProvider, runpod: FakeRunPod) -> None:
    submitted = provider.submit(job(prompt='runpod:queued'))
    state = provider.cancel(submitted.provider_job_id)
    assert state.status is Status.CANCELED and not state.charged_by_provider
    assert runpod.jobs[submitted.provider_job_id].started_at is None


def test_a_job_that_cannot_start_before_its_ttl_times_out(provider: RunPodProvider, runpod: FakeRunPod) -> None:
    submitted = provider.submit(job(prompt='runpod:queued', deadline=10))
    runpod.jobs[submitted.provider_job_id].ttl_ms = 50  # time passing, faster
    assert until_final(provider, submitted.provider_job_id).status is Status.EXPIRED


def test_too_little_time_left_sends_nothing(provider: RunPodProvider, runpod: FakeRunPod) -> None:
    with pytest.raises(StartTooLate):
        provider.submit(job(deadline=9))
    assert runpod.runs == []


def test_a_model_without_an_endpoint_is_rejected(runpod: FakeRunPod, journal: InMemoryJournal) -> None:
    provider = RunPodProvider(runpod.base_url, endpoints={}, api_token=TOKEN, journal=journal)
    with pytest.raises(ProviderRejected):
        provider.submit(job())


def test_a_wrong_token_is_unavailable_not_a_failed_job(runpod: FakeRunPod, journal: InMemoryJournal) -> None:
    provider = RunPodProvider(runpod.base_url, endpoints={WORKER.id: ENDPOINT}, api_token='wrong', journal=journal)
    with pytest.raises(ProviderRejected):
        provider.submit(job())  # 401 on submit: refused for good
    good = RunPodProvider(runpod.base_url, endpoints={WORKER.id: ENDPOINT}, api_token=TOKEN, journal=journal)
    submitted = good.submit(job('tsk_2'))
    with pytest.raises(ProviderUnavailable):
        provider.poll(submitted.provider_job_id)


def test_an_unresolved_submit_is_sent_again_only_once_it_is_certainly_over(
    runpod: FakeRunPod, journal: InMemoryJournal
) -> None:
    now = [datetime(2026, 12, 1, tzinfo=UTC)]
    provider = RunPodProvider(
        runpod.base_url, endpoints={WORKER.id: ENDPOINT}, api_token=TOKEN, journal=journal, clock=lambda: now[0]
    )
    assert journal.claim('runpod', 'tsk_1', attempt=1, now=now[0])  # a submit whose answer was lost
    with pytest.raises(ProviderUnavailable):
        provider.submit(job())
    now[0] += timedelta(seconds=41)
    assert provider.submit(job()).status is Status.SUBMITTED and len(runpod.runs) == 1


def test_the_webhook_is_a_hint_the_status_decides(provider: RunPodProvider, runpod: FakeRunPod) -> None:
    submitted = provider.submit(job(prompt='runpod:held'))
    job_id = submitted.provider_job_id
    until_status(runpod, job_id, 'IN_PROGRESS')
    # A forged webhook: COMPLETED, with an output of the forger's choosing, for a job still running
    forged = {'id': job_id, 'status': 'COMPLETED', 'output': {'images': ['https://evil.example/x.png']}}
    state = provider.parse_webhook({}, json.dumps(forged).encode())
    assert state.status is Status.RUNNING and state.outputs == ()
    runpod.finish(job_id)
    until_status(runpod, job_id, 'COMPLETED')
    state = provider.parse_webhook({}, json.dumps(forged).encode())
    assert state.status is Status.SUCCEEDED
    assert [o.url for o in state.outputs] == [f'{runpod.base_url}/files/{job_id}/0.png']


def test_a_webhook_for_a_job_not_on_record_asks_nobody(provider: RunPodProvider, runpod: FakeRunPod) -> None:
    state = provider.parse_webhook({}, json.dumps({'id': 'not-ours-u1', 'status': 'COMPLETED'}).encode())
    assert state.status is Status.FAILED and state.raw_status == 'not_on_record'
    with pytest.raises(MalformedWebhook):
        provider.parse_webhook({}, b'[]')


def test_the_fake_sends_the_status_object_as_its_webhook(provider: RunPodProvider, runpod: FakeRunPod) -> None:
    with receiving(WebhookReceiver(), '/webhooks/providers/runpod') as receiver:
        submitted = provider.submit(job(webhook=receiver.url))
        hook = receiver.wait_for(lambda h: h.json.get('status') == 'COMPLETED')
    assert hook.json['id'] == submitted.provider_job_id and 'executionTime' in hook.json
    assert 'x-runpod-signature' not in hook.headers  # RunPod does not sign
    assert provider.parse_webhook(hook.headers, hook.body).status is Status.SUCCEEDED


def test_only_the_models_runpod_endpoints_names_are_offered() -> None:
    from atelier.config import Settings

    base = {
        'STAGE': 'test',
        'LEDGER_TABLE': 'l',
        'TASKS_TABLE': 't',
        'EVENTS_TABLE': 'e',
        'MEDIA_BUCKET': 'b',
        'TASK_QUEUE_URL': 'q',
        'TASK_STATE_MACHINE_ARN': 'arn',
        'SECRETS_PREFIX': '/atelier/test/',
    }
    catalog = load_catalog()
    off = configured_providers(Settings.from_env(base), secret=lambda name: '', catalog=catalog)
    assert 'runpod' not in off.names and WORKER.id not in {m.id for m in catalog.available(off.names, off.offers)}
    on = configured_providers(
        Settings.from_env({**base, 'RUNPOD_ENDPOINTS': json.dumps({WORKER.id: ENDPOINT})}),
        secret=lambda name: '',
        catalog=catalog,
    )
    assert WORKER.id in {m.id for m in catalog.available(on.names, on.offers)}
    with pytest.raises(ValueError):
        configured_providers(
            Settings.from_env({**base, 'RUNPOD_ENDPOINTS': json.dumps({WORKER.id: '../x'})}),
            secret=lambda name: '',
            catalog=catalog,
        )


def test_only_the_outputs_keys_are_files_and_only_images_or_videos() -> None:
    # Given a worker that echoes its input next to its image (a URL the user chose) and declares an HTML file
    output = {
        'images': ['http://127.0.0.1:9/out/0.png', {'url': 'http://127.0.0.1:9/out/page', 'content_type': 'text/html'}],
        'prompt': 'http://127.0.0.1:9/someone-else/0.png',
        'preview': 'http://127.0.0.1:9/out/grid.png',
    }
    # Then only the image under "images" is an output (nothing echoed is copied or charged)
    assert [file.url for file in _outputs(output)] == ['http://127.0.0.1:9/out/0.png']
    assert [file.url for file in _outputs({'video': 'http://127.0.0.1:9/out/v.mp4'})] == [
        'http://127.0.0.1:9/out/v.mp4'
    ]
