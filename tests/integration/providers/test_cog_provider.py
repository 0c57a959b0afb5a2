"""The Cog adapter against a real Cog server (coglet): idempotent submit, poll by re-PUT, webhooks, cancel, failures."""

from __future__ import annotations

import base64
import hashlib
import struct
import time
import uuid

import boto3
import httpx
import pytest
from moto import mock_aws

from atelier.catalog import load_catalog
from atelier.providers import InvalidWebhookSignature, Job, JobState, ProviderRejected, ProviderUnavailable, Status
from atelier.providers.cog.client import CogProvider, webhook_token
from atelier.providers.journal import InMemoryJournal
from atelier.storage import MediaStore, OutputUnavailable
from tests.integration.providers.conftest import COG_SECRET, CogServer, Hook, Receiver

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def new_task_id() -> str:
    return f'tsk_{uuid.uuid4().hex}'


def job(task_id: str, receiver: Receiver | None = None, **data: object) -> Job:
    return Job(
        task_id=task_id,
        model_id='cog/echo-image',
        provider_model='echo-image',
        input={'prompt': 'a red fox', **data},
        webhook_url=f'{receiver.url}/webhooks/providers/cog' if receiver else '',
        deadline_seconds=60,
    )


@pytest.fixture
def provider(cog: CogServer) -> CogProvider:
    return CogProvider(cog.url, webhook_secret=COG_SECRET, catalog=load_catalog(), journal=InMemoryJournal())


def parse(provider: CogProvider, hook: Hook) -> JobState:
    return provider.parse_webhook(hook.headers, hook.body)


def decoded(url: str) -> bytes:
    assert url.startswith('data:image/png;base64,')
    return base64.b64decode(url.split(',', 1)[1])


def test_submit_twice_starts_one_prediction_and_a_poll_is_a_repeat_put(
    cog: CogServer, provider: CogProvider, receiver: Receiver
) -> None:
    # Given a prediction that runs until canceled
    task_id = cog.track(new_task_id())
    first = provider.submit(job(task_id, receiver, prompt='slow fox'))
    # When the submit is repeated (a retried step) and the job polled
    second = provider.submit(job(task_id, receiver, prompt='slow fox'))
    deadline = time.monotonic() + 5
    while (polled := provider.poll(task_id)).status is not Status.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # Then it is one prediction, under the task's id, now running
    assert first.provider_job_id == second.provider_job_id == polled.provider_job_id == task_id
    assert first.status is Status.SUBMITTED and polled.raw_status == 'processing'
    # When it is canceled: asked now, final by webhook
    asked = provider.cancel(task_id)
    assert asked.status is Status.RUNNING and not asked.is_final
    final = parse(provider, receiver.final(task_id))
    assert final.status is Status.CANCELED
    assert final.error is not None and final.error.code == 'provider_canceled'
    assert not final.charged_by_provider
    assert [h.json['status'] for h in receiver.of(task_id)].count('canceled') == 1


def test_success_arrives_by_webhook_with_png_outputs_that_settle_stores_in_s3(
    cog: CogServer, provider: CogProvider, receiver: Receiver
) -> None:
    # Given a two-image request
    task_id = cog.track(new_task_id())
    provider.submit(job(task_id, receiver, num_images=2, resolution='512x512', seed=7))
    # When its final webhook arrives
    hook = receiver.final(task_id)
    state = parse(provider, hook)
    # Then two real PNGs (16x16 at 512x512), priced from the catalog: one credit per image delivered
    assert state.status is Status.SUCCEEDED and state.error is None
    assert [o.content_type for o in state.outputs] == ['image/png', 'image/png']
    images = [decoded(o.url) for o in state.outputs]
    assert all(i.startswith(PNG_SIGNATURE) for i in images) and images[0] != images[1]
    assert struct.unpack('>II', images[0][16:24]) == (16, 16)
    assert state.actual_credits == 2
    # And the webhook was authenticated by a header, its credentials never in the path
    assert hook.path == '/webhooks/providers/cog'
    assert hook.headers['authorization'].startswith('Basic ')
    # When settle copies an output into the bucket
    with mock_aws():
        s3 = boto3.client('s3', region_name='us-east-1')
        s3.create_bucket(Bucket='media')
        stored = MediaStore('media', s3=s3, http=httpx.Client()).copy_from_url(
            state.outputs[0].url, 'outputs/acc/tsk/0.png', content_type=state.outputs[0].content_type, provider='cog'
        )
        body = s3.get_object(Bucket='media', Key='outputs/acc/tsk/0.png')
        # Then the bytes in S3 are the PNG, byte for byte
        assert body['Body'].read() == images[0]
        assert body['ContentType'] == 'image/png'
        assert stored.size == len(images[0]) and stored.sha256 == hashlib.sha256(images[0]).hexdigest()


def test_a_failing_prediction_is_a_provider_error(cog: CogServer, provider: CogProvider, receiver: Receiver) -> None:
    task_id = cog.track(new_task_id())
    provider.submit(job(task_id, receiver, prompt='fail on purpose'))
    state = parse(provider, receiver.final(task_id))
    assert state.status is Status.FAILED and state.outputs == ()
    assert state.error is not None and state.error.code == 'provider_error'
    assert 'cannot draw' in state.error.message
    assert not state.charged_by_provider and state.actual_credits is None


def test_webhooks_without_the_tasks_own_credentials_are_refused(
    cog: CogServer, provider: CogProvider, receiver: Receiver
) -> None:
    # Given a real webhook for one task
    task_id = cog.track(new_task_id())
    provider.submit(job(task_id, receiver))
    hook = receiver.final(task_id)
    assert parse(provider, hook).status is Status.SUCCEEDED

    def basic(user: str, password: str) -> dict[str, str]:
        return {'authorization': 'Basic ' + base64.b64encode(f'{user}:{password}'.encode()).decode()}

    forged = [
        ({}, hook.body),  # no credentials
        (basic('cog', webhook_token(COG_SECRET, 'tsk_other')), hook.body),  # another task's token
        (basic('cog', webhook_token('not-the-secret', task_id)), hook.body),  # signed with another secret
        (hook.headers, hook.body.replace(task_id.encode(), b'tsk_other')),  # a valid token on another task
        ({'authorization': 'Basic !!!'}, hook.body),  # malformed
        (hook.headers, b'not json'),
    ]
    for headers, body in forged:
        with pytest.raises(InvalidWebhookSignature):
            provider.parse_webhook(headers, body)


def test_a_missed_final_webhook_is_recovered_by_a_poll_that_runs_the_prediction_again(
    cog: CogServer, provider: CogProvider, receiver: Receiver
) -> None:
    # Given a finished prediction whose final webhook never reached the task (coglet then forgets it)
    task_id = cog.track(new_task_id())
    provider.submit(job(task_id, receiver, seed=3))
    lost = receiver.final(task_id)
    cog.wait_idle()
    # When the task polls: the repeat PUT starts the same request again
    again = provider.poll(task_id)
    assert again.status in {Status.SUBMITTED, Status.RUNNING, Status.SUCCEEDED}
    # Then its own final webhook brings the (deterministic) result
    second = receiver.wait_for(
        lambda h: h.json.get('id') == task_id and h.json.get('status') == 'succeeded' and h is not lost
    )
    recovered = parse(provider, second)
    assert recovered.status is Status.SUCCEEDED
    assert [decoded(o.url) for o in recovered.outputs] == [decoded(o.url) for o in parse(provider, lost).outputs]


def test_a_busy_server_makes_a_submit_retry_later(cog: CogServer, provider: CogProvider, receiver: Receiver) -> None:
    busy = cog.track(new_task_id())
    provider.submit(job(busy, receiver, prompt='slow'))
    with pytest.raises(ProviderUnavailable):
        provider.submit(job(cog.track(new_task_id()), receiver))


def test_a_cancel_answered_404_is_unknown_and_the_late_final_webhook_still_decides(
    cog: CogServer, provider: CogProvider, receiver: Receiver
) -> None:
    # Given a prediction that just succeeded while our webhook endpoint fails (the start webhook and four tries
    # of the final one are answered 503): coglet has forgotten it but keeps retrying its final webhook
    receiver.answers.extend([503] * 5)
    task_id = cog.track(new_task_id())
    provider.submit(job(task_id, receiver))
    first = receiver.final(task_id)
    cog.wait_idle()
    # When the task is canceled: Cog answers 404
    state = provider.cancel(task_id)
    # Then that is not taken as canceled: unknown, not final
    assert (state.status, state.raw_status, state.is_final) == (Status.RUNNING, 'unknown', False)
    # And a poll does not run the prediction again (a repeat PUT would)
    assert provider.poll(task_id).raw_status == 'unknown'
    assert cog.health() == 'READY'
    # And coglet's fifth try (about 3 s later, answered 200) brings the late final word: succeeded, with its result
    receiver.wait_for(lambda _: len(receiver.of(task_id)) == 6)
    assert not receiver.answers
    assert sorted(h.json['status'] for h in receiver.of(task_id)) == ['processing'] + ['succeeded'] * 5
    late = parse(provider, receiver.of(task_id)[-1])
    assert late.status is Status.SUCCEEDED and late.outputs
    assert [decoded(o.url) for o in late.outputs] == [decoded(o.url) for o in parse(provider, first).outputs]


def test_poll_of_a_job_never_submitted_is_lost(cog: CogServer, provider: CogProvider) -> None:
    state = provider.poll('tsk_unknown')
    assert state.status is Status.FAILED
    assert state.error is not None and state.error.code == 'provider_job_lost'


def test_an_unreachable_server_is_unavailable() -> None:
    provider = CogProvider(
        'http://127.0.0.1:9', webhook_secret=COG_SECRET, catalog=load_catalog(), journal=InMemoryJournal()
    )
    with pytest.raises(ProviderUnavailable):
        provider.submit(job(new_task_id(), Receiver(url='http://127.0.0.1:9')))


def test_without_a_webhook_url_a_cog_job_is_refused(cog: CogServer, provider: CogProvider) -> None:
    # Cog forgets finished predictions: with no webhook to deliver the result, it could never be seen.
    with pytest.raises(ProviderRejected, match='webhook'):
        provider.submit(job(new_task_id()))
    assert cog.health() == 'READY'


@pytest.mark.parametrize('url', ['data:image/png;base64,***', 'data:image/png;base64'])
def test_a_malformed_data_uri_output_is_unavailable_for_good(url: str) -> None:
    with mock_aws():
        s3 = boto3.client('s3', region_name='us-east-1')
        s3.create_bucket(Bucket='media')
        with pytest.raises(OutputUnavailable):
            MediaStore('media', s3=s3).copy_from_url(
                url, 'outputs/acc/tsk/0.png', content_type='image/png', provider='cog'
            )


def test_a_data_uri_larger_than_allowed_is_unavailable() -> None:
    url = 'data:application/octet-stream;base64,' + base64.b64encode(b'x' * 2048).decode()
    with mock_aws():
        s3 = boto3.client('s3', region_name='us-east-1')
        s3.create_bucket(Bucket='media')
        with pytest.raises(OutputUnavailable):
            MediaStore('media', s3=s3).copy_from_url(url, 'k', content_type='', provider='cog', max_bytes=1024)
