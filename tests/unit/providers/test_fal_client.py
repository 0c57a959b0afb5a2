"""The fal adapter against the fake fal on 127.0.0.1: queue, statuses, result, cost, cancel, webhooks, quirks."""

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
from atelier.providers.fal.client import COST_UNIT, FalProvider
from atelier.providers.journal import InMemoryJournal
from infra.local.fake_fal import FakeFal
from tests.support.webhooks import WebhookReceiver, receiving

TOKEN = 'fal_atelier_test'
FLUX = load_catalog().get('fal/flux-dev')


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with receiving(WebhookReceiver(), '/webhooks/providers/fal') as state:
        yield state


@pytest.fixture
def fal() -> Iterator[FakeFal]:
    server = FakeFal(token=TOKEN, time_scale=0.05)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def journal() -> InMemoryJournal:
    return InMemoryJournal()


@pytest.fixture
def provider(fal: FakeFal, journal: InMemoryJournal) -> FalProvider:
    return FalProvider(
        fal.base_url,
        api_token=TOKEN,
        jwks_url=f'{fal.base_url}/.well-known/jwks.json',
        catalog=load_catalog(),
        journal=journal,
    )


def job(task_id: str = 'tsk_1', *, webhook: str = '', deadline: int = 300, **data: Any) -> Job:
    return Job(
        task_id=task_id,
        model_id=FLUX.id,
        provider_model=FLUX.provider_model,
        input={'prompt': 'a red fox', 'num_images': 1, 'resolution': '1024x1024', 'quality': 'standard', **data},
        webhook_url=webhook,
        deadline_seconds=deadline,
    )


def until_final(provider: FalProvider, request_id: str, timeout: float = 5.0) -> JobState:
    deadline = time.monotonic() + timeout
    while not (state := provider.poll(request_id)).is_final:
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    return state


def test_submit_queues_once_with_the_webhook_the_key_and_the_start_timeout(
    fal: FakeFal, provider: FalProvider, receiver: WebhookReceiver
) -> None:
    state = provider.submit(job(webhook=receiver.url, deadline=120, resolution='512x512', quality='hd'))
    assert state.status is Status.SUBMITTED and state.queue_position == 0
    [(model, headers, query, body)] = fal.submits
    assert model == 'fal-ai/flux/dev'
    assert headers['authorization'] == f'Key {TOKEN}'
    # fal's start timeout: the time left minus the model's run, so a request that starts runs before our deadline
    assert headers['x-fal-request-timeout'] == str(120 - FLUX.limits.expected_run_seconds)
    assert query == {'fal_webhook': receiver.url}
    assert body == {'prompt': 'a red fox', 'num_images': 1, 'image_size': 'square', 'num_inference_steps': 50}
    # A second submit of the same task (its answer was lost) follows the same request: nothing new is queued
    again = provider.submit(job(webhook=receiver.url))
    assert again.provider_job_id == state.provider_job_id and len(fal.submits) == 1


def test_a_request_succeeds_with_its_images_and_fal_billable_units(fal: FakeFal, provider: FalProvider) -> None:
    request_id = provider.submit(job(num_images=2)).provider_job_id
    state = until_final(provider, request_id)
    assert state.status is Status.SUCCEEDED and state.raw_status == 'COMPLETED'
    assert [o.content_type for o in state.outputs] == ['image/png', 'image/png']
    assert all(o.url.startswith(f'{fal.base_url}/files/{request_id}/') for o in state.outputs)
    assert state.cost is not None and (state.cost.unit, state.cost.amount) == (COST_UNIT, 2.0)
    assert state.actual_credits is None  # priced by the task service, from the task's own input


def test_status_urls_name_the_app_and_are_used_as_given(
    fal: FakeFal, provider: FalProvider, journal: InMemoryJournal
) -> None:
    request_id = provider.submit(job()).provider_job_id
    details = journal.recall('fal', request_id)
    assert details is not None
    assert details['status_url'] == f'{fal.base_url}/fal-ai/flux/requests/{request_id}/status'
    assert details['response_url'] == f'{fal.base_url}/fal-ai/flux/requests/{request_id}'
    # Only what following the request needs: the user's input (prompt, presigned URLs) is not kept
    assert details.keys() == {'model_id', 'status_url', 'response_url', 'cancel_url'}
    assert 'a red fox' not in json.dumps(details)


def test_in_queue_shows_the_queue_position(fal: FakeFal, provider: FalProvider) -> None:
    held = [provider.submit(job(f'tsk_{n}', prompt=f'fal:queued {n}')).provider_job_id for n in range(3)]
    positions = [provider.poll(request_id) for request_id in held]
    assert [(s.status, s.raw_status, s.queue_position) for s in positions] == [
        (Status.SUBMITTED, 'IN_QUEUE', n) for n in range(3)
    ]


def test_completed_then_422_on_the_result_is_a_failure_fal_may_bill(provider: FalProvider) -> None:
    request_id = provider.submit(job(prompt='fal:422 something')).provider_job_id
    state = until_final(provider, request_id)
    assert state.status is Status.FAILED
    assert state.error is not None and state.error.code == 'provider_rejected_input'
    assert 'flagged' not in state.error.message  # fal's text is logged, not shown
    assert state.charged_by_provider is True


def test_a_start_timeout_at_fal_is_expired_and_not_billed(provider: FalProvider) -> None:
    deadline = FLUX.limits.expected_run_seconds + 1  # fal may wait 1 s for it to start
    request_id = provider.submit(job(prompt='fal:queued forever', deadline=deadline)).provider_job_id
    state = until_final(provider, request_id, timeout=5)
    assert state.status is Status.EXPIRED
    assert state.error is not None and state.error.code == 'provider_start_timeout'
    assert state.charged_by_provider is False


def test_too_little_time_left_to_run_sends_nothing(
    fal: FakeFal, provider: FalProvider, journal: InMemoryJournal
) -> None:
    # Given a task with less time left than its model runs
    with pytest.raises(StartTooLate):
        provider.submit(job('tsk_late', deadline=FLUX.limits.expected_run_seconds))
    # Then nothing reached fal, and nothing is left claimed
    assert fal.submits == [] and journal.get('fal', 'tsk_late') is None


def test_cancel_while_queued_removes_it_and_is_final(fal: FakeFal, provider: FalProvider) -> None:
    request_id = provider.submit(job(prompt='fal:queued')).provider_job_id
    state = provider.cancel(request_id)
    assert state.status is Status.CANCELED and state.is_final and not state.charged_by_provider
    assert fal.requests[request_id].status == 'COMPLETED'
    assert provider.poll(request_id).status is Status.CANCELED  # its result answers 499


def running(provider: FalProvider, request_id: str) -> None:
    """Wait until fal reports the request IN_PROGRESS (a ``fal:held`` request stays so until finished)."""
    deadline = time.monotonic() + 5
    while provider.poll(request_id).status is not Status.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_cancel_while_running_is_only_a_request_and_the_result_decides(fal: FakeFal, provider: FalProvider) -> None:
    request_id = provider.submit(job(prompt='fal:held')).provider_job_id
    running(provider, request_id)
    asked = provider.cancel(request_id)
    assert (asked.status, asked.raw_status, asked.is_final) == (Status.RUNNING, 'CANCELLATION_REQUESTED', False)
    assert provider.poll(request_id).status is Status.RUNNING  # still running until the app decides
    fal.finish(request_id)
    assert until_final(provider, request_id).status is Status.SUCCEEDED  # this app finished its work anyway
    assert provider.cancel(request_id).status is Status.SUCCEEDED  # ALREADY_COMPLETED: the status tells


def test_an_internal_retry_is_the_same_request(fal: FakeFal, provider: FalProvider, receiver: WebhookReceiver) -> None:
    request_id = provider.submit(job(prompt='fal:retry', webhook=receiver.url)).provider_job_id
    hook = receiver.wait_for(lambda h: h.json['request_id'] == request_id)
    assert hook.json['gateway_request_id'] != request_id
    state = provider.parse_webhook(hook.headers, hook.body)
    assert (state.provider_job_id, state.status) == (request_id, Status.SUCCEEDED)
    assert fal.requests[request_id].attempts == 2


def test_a_webhook_is_verified_then_the_result_is_fetched(provider: FalProvider, receiver: WebhookReceiver) -> None:
    request_id = provider.submit(job(webhook=receiver.url)).provider_job_id
    hook = receiver.wait_for(lambda h: h.json['request_id'] == request_id)
    assert set(hook.headers) >= {
        'x-fal-webhook-request-id',
        'x-fal-webhook-user-id',
        'x-fal-webhook-timestamp',
        'x-fal-webhook-signature',
    }
    state = provider.parse_webhook(hook.headers, hook.body)
    assert state.status is Status.SUCCEEDED and len(state.outputs) == 1
    assert state.cost is not None and state.cost.amount == 1.0


def test_an_error_webhook_with_a_null_payload_is_a_failure(provider: FalProvider, receiver: WebhookReceiver) -> None:
    request_id = provider.submit(job(prompt='fal:error-null', webhook=receiver.url)).provider_job_id
    hook = receiver.wait_for(lambda h: h.json['request_id'] == request_id)
    assert hook.json['status'] == 'ERROR' and hook.json['payload'] is None and hook.json['payload_error']
    state = provider.parse_webhook(hook.headers, hook.body)
    assert state.status is Status.FAILED and state.error is not None and state.error.code == 'provider_error'
    assert state.charged_by_provider is False  # fal never bills a 5xx


def test_a_webhook_whose_body_names_another_request_is_malformed(
    fal: FakeFal, provider: FalProvider, receiver: WebhookReceiver
) -> None:
    request_id = provider.submit(job(webhook=receiver.url)).provider_job_id
    body = json.dumps({'request_id': 'someone-else', 'status': 'OK', 'payload': {}}).encode()
    with pytest.raises(MalformedWebhook):
        provider.parse_webhook(fal.signed_headers(body, request_id), body)


def test_the_token_is_sent_only_to_the_api_base(fal: FakeFal, provider: FalProvider, journal: InMemoryJournal) -> None:
    journal.remember(
        'fal',
        'req-elsewhere',
        {'status_url': 'https://attacker.example/status', 'response_url': '', 'cancel_url': ''},
        datetime.now(UTC),
    )
    with pytest.raises(ProviderUnavailable, match='not on the API base'):
        provider.poll('req-elsewhere')


def test_an_unknown_request_is_lost(provider: FalProvider) -> None:
    assert provider.poll('never-submitted').error is not None
    assert provider.poll('never-submitted').status is Status.FAILED


def test_a_submit_whose_answer_was_lost_is_retried_only_after_a_while(fal: FakeFal, journal: InMemoryJournal) -> None:
    now = [datetime.now(UTC)]
    provider = FalProvider(
        fal.base_url,
        api_token=TOKEN,
        jwks_url='',
        catalog=load_catalog(),
        journal=journal,
        clock=lambda: now[0],
    )
    # Given a claim whose POST's outcome is unknown (sent, then no answer)
    assert journal.claim('fal', 'tsk_lost', attempt=1, now=now[0])
    with pytest.raises(ProviderUnavailable):
        provider.submit(job('tsk_lost'))
    assert fal.submits == []
    # When long enough has passed for any earlier attempt to be over, it is submitted again (once)
    now[0] += timedelta(seconds=41)
    assert provider.submit(job('tsk_lost')).status is Status.SUBMITTED
    assert len(fal.submits) == 1


def _elsewhere(fal: FakeFal) -> str:
    """The fake's own server under another origin (``localhost`` is not ``127.0.0.1``): reachable, not trusted."""
    return fal.base_url.replace('127.0.0.1', 'localhost')


def test_urls_off_the_api_base_fail_the_task_and_never_queue_a_second_request(
    fal: FakeFal, provider: FalProvider, journal: InMemoryJournal
) -> None:
    # Given fal answers a submit with URLs on another origin than FalApiBase (a deployment error)
    fal.url_origins = dict.fromkeys(('status_url', 'response_url', 'cancel_url'), _elsewhere(fal))
    # When the task is submitted
    with pytest.raises(ProviderRejected):
        provider.submit(job('tsk_elsewhere', prompt='fal:queued elsewhere'))
    # Then fal's request is on record for the task, and submitting again (a retried step) queues nothing new
    [request_id] = list(fal.requests)
    record = journal.get('fal', 'tsk_elsewhere')
    assert record is not None and record.job_id == request_id
    for _ in range(3):
        again = provider.submit(job('tsk_elsewhere', prompt='fal:queued elsewhere'))
        assert (again.provider_job_id, again.status) == (request_id, Status.FAILED)  # that request, never a new one
    assert len(fal.submits) == 1
    # And no URL fal named was called with the token (the untrusted cancel URL neither)
    assert fal.requests[request_id].status == 'IN_QUEUE'


def test_a_request_whose_cancel_url_is_trusted_is_canceled_when_the_others_are_not(
    fal: FakeFal, provider: FalProvider
) -> None:
    fal.url_origins = {'status_url': _elsewhere(fal), 'response_url': _elsewhere(fal)}
    with pytest.raises(ProviderRejected):
        provider.submit(job('tsk_half', prompt='fal:queued half elsewhere'))
    [request] = fal.requests.values()
    assert request.status == 'COMPLETED' and request.result is not None and request.result[0] == 499
    assert len(fal.submits) == 1


KLING = load_catalog().get('fal/kling-video')


def kling_job(task_id: str, **data: Any) -> Job:
    return Job(
        task_id=task_id,
        model_id=KLING.id,
        provider_model=KLING.provider_model,
        input={'prompt': 'waves', 'image': 'https://bucket.example/in.png', **data},
        deadline_seconds=KLING.limits.deadline_seconds,
    )


def test_kling_gets_the_duration_as_fal_takes_it_and_nothing_it_does_not_take(
    fal: FakeFal, provider: FalProvider
) -> None:
    # Given an input the catalog accepts for Kling (10 seconds)
    data = KLING.validate_input({'prompt': 'waves', 'image': 'uploads/acct_1/in.png', 'duration_seconds': 10})
    assert data.model_dump(exclude_none=True).keys() == {'prompt', 'image', 'duration_seconds'}
    # When it is submitted, fal takes it
    assert provider.submit(kling_job('tsk_kling', duration_seconds=10)).status is Status.SUBMITTED
    [(model, _, _, body)] = fal.submits
    assert model == 'fal-ai/kling-video/v2/master/image-to-video'
    assert body == {'prompt': 'waves', 'image_url': 'https://bucket.example/in.png', 'duration': '10'}


def test_fal_refuses_what_kling_does_not_take_with_a_422(fal: FakeFal, provider: FalProvider) -> None:
    with pytest.raises(ProviderRejected):
        provider.submit(kling_job('tsk_kling_7', duration_seconds=7))
    with pytest.raises(ProviderRejected):
        provider.submit(kling_job('tsk_kling_hd', resolution='1080p'))
    assert fal.requests == {}


def test_images_fal_flagged_are_dropped_and_not_priced(fal: FakeFal, provider: FalProvider) -> None:
    # Given fal's safety checker flags the first of two images (a black image, has_nsfw_concepts [true, false])
    request_id = provider.submit(job(prompt='fal:nsfw-first a beach', num_images=2)).provider_job_id
    state = until_final(provider, request_id)
    # Then only the other image is an output, and only it is priced
    assert state.status is Status.SUCCEEDED
    assert [o.url for o in state.outputs] == [f'{fal.base_url}/files/{request_id}/1.png']
    assert state.actual_credits is None  # the task service prices the one image delivered


def test_every_image_flagged_is_a_failure_with_a_stable_code(provider: FalProvider) -> None:
    request_id = provider.submit(job(prompt='fal:nsfw a beach', num_images=2)).provider_job_id
    state = until_final(provider, request_id)
    assert (state.status, state.outputs) == (Status.FAILED, ())
    assert state.error is not None and state.error.code == 'content_filtered'


def test_a_webhook_whose_result_is_not_ready_is_503_and_never_settled_from_its_body(
    fal: FakeFal, provider: FalProvider
) -> None:
    # Given a request still running at fal, and a (correctly signed) webhook that says it is done
    request_id = provider.submit(job(prompt='fal:held early webhook')).provider_job_id
    running(provider, request_id)
    body = json.dumps({'request_id': request_id, 'status': 'OK', 'payload': {'images': []}}).encode()
    # When it is parsed, the result answers 400 "still in progress": fal is to retry (503), nothing is decided
    with pytest.raises(ProviderUnavailable):
        provider.parse_webhook(fal.signed_headers(body, request_id), body)
    # And once the request is done, the same webhook settles from the result
    fal.finish(request_id)
    until_final(provider, request_id)
    state = provider.parse_webhook(fal.signed_headers(body, request_id), body)
    assert state.status is Status.SUCCEEDED and len(state.outputs) == 1


def test_completed_then_a_400_result_is_a_failure_not_running_forever(provider: FalProvider) -> None:
    request_id = provider.submit(job(prompt='fal:result-400')).provider_job_id
    state = until_final(provider, request_id)
    assert state.status is Status.FAILED and state.error is not None and state.error.code == 'provider_error'
    assert state.charged_by_provider is False


def test_a_webhook_for_a_request_no_task_made_names_it_and_nothing_else(fal: FakeFal, provider: FalProvider) -> None:
    body = json.dumps({'request_id': 'req-unknown', 'status': 'OK', 'payload': {'images': []}}).encode()
    state = provider.parse_webhook(fal.signed_headers(body, 'req-unknown'), body)
    # The task service finds no task for it (404); no result was fetched, no output taken from the body
    assert (state.provider_job_id, state.outputs) == ('req-unknown', ())


def test_a_cancel_fal_cannot_place_is_not_final(fal: FakeFal, provider: FalProvider, journal: InMemoryJournal) -> None:
    # Given a request on record that fal answers NOT_FOUND for, and one not on record at all
    base = f'{fal.base_url}/fal-ai/flux/requests/req-gone'
    urls = {'status_url': f'{base}/status', 'response_url': base, 'cancel_url': f'{base}/cancel'}
    journal.remember('fal', 'req-gone', {'model_id': FLUX.id, **urls}, datetime.now(UTC))
    # When each is canceled, Then neither answer is final (it says nothing of how the request ended)
    gone, unknown = provider.cancel('req-gone'), provider.cancel('req-never-recorded')
    assert (gone.status, gone.raw_status, gone.is_final) == (Status.RUNNING, 'NOT_FOUND', False)
    assert (unknown.status, unknown.is_final) == (Status.RUNNING, False)
