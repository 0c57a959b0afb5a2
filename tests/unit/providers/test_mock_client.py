"""The mock adapter: a real provider's contract (idempotent submit, normalized states, signed webhooks, cost)."""

from __future__ import annotations

import time

import httpx
import pytest

from atelier.catalog import load_catalog
from atelier.providers import (
    InvalidWebhookSignature,
    Job,
    JobState,
    ProviderRejected,
    ProviderUnavailable,
    Status,
)
from atelier.providers.mock.client import MockProvider
from atelier.providers.mock.server import MockProviderServer
from atelier.providers.signing import sign
from tests.unit.providers.conftest import SECRET, WebhookReceiver


def job(task_id: str, model: str = 'image', **data: object) -> Job:
    return Job(
        task_id=task_id,
        model_id=f'mock/{model}',
        provider_model=model,
        input={'prompt': 'a fox', **data},
        deadline_seconds=60,
    )


@pytest.fixture
def provider(mock_provider: MockProviderServer) -> MockProvider:
    return MockProvider(mock_provider.url, webhook_secret=SECRET, catalog=load_catalog())


def wait_final(provider: MockProvider, job_id: str) -> JobState:
    deadline = time.monotonic() + 5
    while not (state := provider.poll(job_id)).is_final:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return state


def test_submit_twice_starts_one_job(provider: MockProvider, mock_provider: MockProviderServer) -> None:
    first = provider.submit(job('tsk_a'))
    second = provider.submit(job('tsk_a'))
    assert first.provider_job_id == second.provider_job_id == 'tsk_a'
    assert first.status is Status.SUBMITTED
    assert len(mock_provider.predictions) == 1


def test_success_is_normalized_with_outputs_and_actual_cost(provider: MockProvider) -> None:
    provider.submit(job('tsk_b', num_images=3))
    state = wait_final(provider, 'tsk_b')
    assert state.status is Status.SUCCEEDED
    assert [o.content_type for o in state.outputs] == ['image/png'] * 3
    assert state.actual_credits == 12


def test_video_costs_less_than_its_estimate(provider: MockProvider) -> None:
    model = load_catalog().get('mock/video')
    data = model.validate_input({'prompt': 'a fox', 'duration_seconds': 4}).model_dump()
    provider.submit(job('tsk_v', 'video', **{k: v for k, v in data.items() if k != 'prompt'}))
    state = wait_final(provider, 'tsk_v')
    assert state.actual_credits is not None
    assert state.actual_credits < model.estimate(model.validate_input(data))


def test_failure_is_normalized_with_an_error(provider: MockProvider) -> None:
    provider.submit(job('tsk_f', 'fail'))
    state = wait_final(provider, 'tsk_f')
    assert state.status is Status.FAILED
    assert state.error is not None and state.error.code == 'provider_error'
    assert state.charged_by_provider is False
    assert state.actual_credits is None


def test_cancel_while_running_ends_canceled(provider: MockProvider) -> None:
    provider.submit(job('tsk_s', 'slow'))
    time.sleep(0.1)
    provider.cancel('tsk_s')
    state = wait_final(provider, 'tsk_s')
    assert state.status is Status.CANCELED
    assert state.charged_by_provider is True


def test_an_unknown_job_is_reported_lost(provider: MockProvider) -> None:
    state = provider.poll('tsk_never')
    assert state.status is Status.FAILED
    assert state.error is not None and state.error.code == 'provider_job_lost'


def test_503_is_transient_and_422_is_final(provider: MockProvider) -> None:
    with pytest.raises(ProviderUnavailable):
        provider.submit(job('tsk_r', fail_submits=1))
    assert provider.submit(job('tsk_r', fail_submits=1)).status is Status.SUBMITTED
    with pytest.raises(ProviderRejected):
        provider.submit(job('tsk_x', 'no-such-model'))


def test_an_unreachable_provider_is_transient() -> None:
    provider = MockProvider('http://127.0.0.1:9', webhook_secret=SECRET, catalog=load_catalog())
    with pytest.raises(ProviderUnavailable):
        provider.poll('tsk_1')


def test_webhooks_are_verified_then_parsed(
    provider: MockProvider, mock_provider: MockProviderServer, receiver: WebhookReceiver
) -> None:
    provider.submit(job('tsk_w'))
    hook = receiver.wait_for(lambda r: r.json['status'] == 'succeeded')
    state = provider.parse_webhook(hook.headers, hook.body)
    assert state.provider_job_id == 'tsk_w'
    assert state.status is Status.SUCCEEDED
    # Tampered or signed with another secret: refused
    with pytest.raises(InvalidWebhookSignature):
        provider.parse_webhook(hook.headers, hook.body.replace(b'succeeded', b'failed'))
    with pytest.raises(InvalidWebhookSignature):
        provider.parse_webhook(sign('not-the-secret', hook.body), hook.body)


def test_outputs_are_fetchable(provider: MockProvider) -> None:
    provider.submit(job('tsk_o'))
    state = wait_final(provider, 'tsk_o')
    assert httpx.get(state.outputs[0].url).status_code == 200


def test_a_signed_webhook_that_is_not_a_prediction_is_a_400_not_a_retry() -> None:
    # Given correctly signed bodies that are not predictions
    from atelier.errors import ErrorKind
    from atelier.providers.base import MalformedWebhook

    provider = MockProvider('http://127.0.0.1:9', webhook_secret=SECRET, catalog=load_catalog())
    for body in (b'[1]', b'{"id": 5}', b'not json'):
        # Then the provider is told its request is bad (4xx), so it stops retrying it
        with pytest.raises(MalformedWebhook) as refused:
            provider.parse_webhook(sign(SECRET, body), body)
        assert refused.value.kind is ErrorKind.BAD_REQUEST
