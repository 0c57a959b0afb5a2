"""The Replicate adapter against a fake Replicate API on 127.0.0.1: submit once, statuses, cost, cancel, webhooks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from atelier.catalog import load_catalog
from atelier.providers import Job, ProviderRejected, ProviderUnavailable, Status
from atelier.providers.journal import InMemoryJournal, SubmissionJournal
from atelier.providers.replicate.client import ReplicateProvider
from tests.integration.providers.fake_replicate import TOKEN, WEBHOOK_SECRET, FakeReplicate
from tests.unit.providers.conftest import WebhookReceiver

SDXL = load_catalog().get('replicate/sdxl')
SDXL_VERSION = SDXL.provider_model.split(':', 1)[1]
WEBHOOK = 'https://api.example.com/webhooks/providers/replicate'


@dataclass
class Clock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def fake() -> Iterator[FakeReplicate]:
    server = FakeReplicate(page_size=2, hang_seconds=1.0)
    server.start()
    server.versions[SDXL_VERSION] = 'stability-ai/sdxl'
    yield server
    server.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


@pytest.fixture
def journal() -> InMemoryJournal:
    return InMemoryJournal()


def replicate(
    base_url: str, clock: Clock, journal: SubmissionJournal, *, token: str = TOKEN, timeout: float = 0.5
) -> ReplicateProvider:
    return ReplicateProvider(
        base_url,
        api_token=token,
        webhook_secret=WEBHOOK_SECRET,
        catalog=load_catalog(),
        journal=journal,
        http=httpx.Client(timeout=httpx.Timeout(timeout, connect=0.5)),
        clock=clock,
    )


@pytest.fixture
def provider(fake: FakeReplicate, clock: Clock, journal: InMemoryJournal) -> ReplicateProvider:
    return replicate(fake.url, clock, journal)


def sdxl_job(task_id: str, webhook: str = WEBHOOK, **data: object) -> Job:
    return Job(
        task_id=task_id,
        model_id='replicate/sdxl',
        provider_model=SDXL.provider_model,
        input={'prompt': 'a fox', 'num_images': 2, 'resolution': '1024x1024', 'quality': 'hd', **data},
        webhook_url=webhook,
        deadline_seconds=120,
    )


# ---------------------------------------------------------------------- submit


def test_submit_creates_a_prediction_by_version_with_mapped_input_deadline_and_webhook(
    provider: ReplicateProvider, fake: FakeReplicate
) -> None:
    state = provider.submit(sdxl_job('tsk_a'))
    assert state.status is Status.SUBMITTED and state.raw_status == 'starting'
    assert state.provider_job_id == fake.only()['id']
    [(path, headers, body)] = fake.creates
    assert path == '/v1/predictions' and body['version'] == SDXL_VERSION
    assert body['input'] == {
        'prompt': 'a fox',
        'num_outputs': 2,
        'width': 1024,
        'height': 1024,
        'num_inference_steps': 50,
    }
    assert body['webhook_events_filter'] == ['start', 'completed']
    webhook = urlsplit(body['webhook'])
    assert webhook.path == '/webhooks/providers/replicate'
    assert parse_qs(webhook.query) == {'atelier_task': ['tsk_a']}
    assert headers['authorization'] == f'Bearer {TOKEN}'
    assert headers['prefer'] == 'respond-async'
    assert headers['cancel-after'] == '120s'


def test_an_official_model_is_run_through_its_model_endpoint(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    job = Job(
        task_id='tsk_b',
        model_id='replicate/flux-schnell',
        provider_model='black-forest-labs/flux-schnell',
        input={'prompt': 'a fox'},
        deadline_seconds=2,
    )
    provider.submit(job)
    [(path, headers, body)] = fake.creates
    assert path == '/v1/models/black-forest-labs/flux-schnell/predictions'
    assert 'version' not in body and 'webhook' not in body  # no public URL: no webhook
    assert headers['cancel-after'] == '5s'  # Replicate's shortest deadline


def test_submitting_again_never_creates_a_second_prediction(
    provider: ReplicateProvider, fake: FakeReplicate, journal: InMemoryJournal
) -> None:
    # Given a submit whose answer never reached the task (the step is retried)
    first = provider.submit(sdxl_job('tsk_a'))
    fake.advance(first.provider_job_id)
    # When it is submitted again
    again = provider.submit(sdxl_job('tsk_a'))
    # Then the retry follows the recorded prediction
    assert len(fake.creates) == 1
    assert again.provider_job_id == first.provider_job_id and again.status is Status.RUNNING
    recorded = journal.get('replicate', 'tsk_a')
    assert recorded is not None and recorded.job_id == first.provider_job_id


@pytest.mark.parametrize('answer', ['create+500', 'create+hang'])
def test_a_create_with_an_unknown_outcome_is_found_by_its_webhook_url(
    provider: ReplicateProvider, fake: FakeReplicate, journal: InMemoryJournal, answer: str
) -> None:
    # Given a create that Replicate performed but whose answer was an error or never came
    fake.create_answers = [answer]
    with pytest.raises(ProviderUnavailable):
        provider.submit(sdxl_job('tsk_a'))
    created = fake.only()
    # And newer predictions of other tasks, so the lookup pages (two a page)
    for n in range(3):
        fake.create('/v1/predictions', {}, {'input': {}, 'webhook': f'{WEBHOOK}?atelier_task=tsk_other{n}'}, None)
    # When the step is retried
    state = provider.submit(sdxl_job('tsk_a'))
    # Then it adopts that prediction instead of creating another
    assert state.provider_job_id == created['id']
    assert len(fake.creates) == 1
    recorded = journal.get('replicate', 'tsk_a')
    assert recorded is not None and (recorded.job_id, recorded.attempt) == (created['id'], 1)


def test_without_a_webhook_an_unknown_outcome_waits_then_submits_again(
    provider: ReplicateProvider, fake: FakeReplicate, journal: InMemoryJournal, clock: Clock
) -> None:
    # Given a 502 (nothing was created, but the adapter cannot know) on a job without webhook
    fake.create_answers = [502]
    with pytest.raises(ProviderUnavailable):
        provider.submit(sdxl_job('tsk_a', webhook=''))
    # When retried soon after: the earlier attempt may still be in flight, so nothing is sent
    clock.advance(20)
    with pytest.raises(ProviderUnavailable, match='no known outcome'):
        provider.submit(sdxl_job('tsk_a', webhook=''))
    assert len(fake.creates) == 1
    # When retried after longer than any request of that attempt can last: a second attempt
    clock.advance(21)
    state = provider.submit(sdxl_job('tsk_a', webhook=''))
    assert len(fake.creates) == 2 and state.provider_job_id == fake.only()['id']
    recorded = journal.get('replicate', 'tsk_a')
    assert recorded is not None and (recorded.attempt, recorded.job_id) == (2, state.provider_job_id)


def test_a_busy_replicate_gives_the_claim_back(
    provider: ReplicateProvider, fake: FakeReplicate, journal: InMemoryJournal
) -> None:
    fake.create_answers = [429, 503]
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            provider.submit(sdxl_job('tsk_a'))
        assert journal.get('replicate', 'tsk_a') is None
    assert provider.submit(sdxl_job('tsk_a')).status is Status.SUBMITTED
    assert len(fake.creates) == 3 and len(fake.predictions) == 1


def test_a_refused_prediction_is_rejected_for_good(fake: FakeReplicate, clock: Clock, journal: InMemoryJournal) -> None:
    fake.create_answers = [422]
    with pytest.raises(ProviderRejected, match='422'):
        replicate(fake.url, clock, journal).submit(sdxl_job('tsk_a'))
    assert journal.get('replicate', 'tsk_a') is None
    with pytest.raises(ProviderRejected, match='401'):
        replicate(fake.url, clock, journal, token='r8_wrong').submit(sdxl_job('tsk_b'))
    assert fake.predictions == {}


def test_an_unreachable_replicate_is_unavailable(clock: Clock, journal: InMemoryJournal) -> None:
    provider = replicate('http://127.0.0.1:9', clock, journal)
    with pytest.raises(ProviderUnavailable):
        provider.submit(sdxl_job('tsk_a'))
    assert journal.get('replicate', 'tsk_a') is None  # nothing was sent: the next try submits at once
    with pytest.raises(ProviderUnavailable):
        provider.poll('abc')


def test_a_duplicate_prediction_loses_to_the_one_recorded_first(
    provider: ReplicateProvider, fake: FakeReplicate, journal: InMemoryJournal
) -> None:
    # Given another attempt of the task recorded its prediction while this one was creating
    earlier = fake.create('/v1/predictions', {}, {'input': {'prompt': 'a fox'}, 'version': SDXL_VERSION}, None)

    class Racing(InMemoryJournal):
        def record(self, provider_name: str, task_id: str, job_id: str) -> str:
            return earlier['id']

    racing = replicate(fake.url, Clock(datetime.now(UTC)), Racing())
    state = racing.submit(sdxl_job('tsk_a'))
    # Then it follows the recorded prediction and cancels its own duplicate
    assert state.provider_job_id == earlier['id']
    duplicate = next(p for p in fake.predictions.values() if p['id'] != earlier['id'])
    assert duplicate['status'] == 'canceled'


# ---------------------------------------------------------------------- statuses and cost


def test_a_prediction_moves_through_the_normalized_statuses(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    job_id = provider.submit(sdxl_job('tsk_a')).provider_job_id
    assert provider.poll(job_id).status is Status.SUBMITTED
    fake.advance(job_id, 'processing')
    assert provider.poll(job_id).status is Status.RUNNING
    fake.advance(job_id, 'booting')  # a status this adapter does not know yet
    unknown = provider.poll(job_id)
    assert (unknown.status, unknown.raw_status, unknown.is_final) == (Status.RUNNING, 'booting', False)
    outputs = [f'https://replicate.delivery/x/out-{n}.png' for n in range(2)]
    fake.finish(job_id, output=outputs, webhook=False)
    done = provider.poll(job_id)
    assert done.status is Status.SUCCEEDED and done.error is None
    assert [(o.url, o.content_type) for o in done.outputs] == [(u, 'image/png') for u in outputs]
    assert done.actual_credits == SDXL.estimate(SDXL.validate_input(sdxl_job('tsk_a').input)) == 12


def test_fewer_images_than_asked_cost_only_those_delivered(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    # A safety filter dropped one of the two images: 2 credits x 1 image x 2 (1024x1024) x 1.5 (hd)
    job_id = provider.submit(sdxl_job('tsk_a')).provider_job_id
    fake.finish(job_id, output=['https://replicate.delivery/x/out-0.webp'], webhook=False)
    state = provider.poll(job_id)
    assert [o.content_type for o in state.outputs] == ['image/webp']
    assert state.actual_credits == 6


def test_a_single_output_url_and_removed_input_are_understood(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    job_id = provider.submit(sdxl_job('tsk_a')).provider_job_id
    fake.predictions[job_id]['input'] = {}  # Replicate deletes inputs after an hour (data_removed)
    fake.finish(job_id, output='https://replicate.delivery/x/out.mp4', webhook=False)
    state = provider.poll(job_id)
    assert [(o.url, o.content_type) for o in state.outputs] == [('https://replicate.delivery/x/out.mp4', 'video/mp4')]
    assert state.actual_credits is None  # charged as estimated


@pytest.mark.parametrize(
    ('raw', 'predict_time', 'status', 'code', 'charged'),
    [
        ('failed', 2.5, Status.FAILED, 'provider_error', True),
        ('failed', None, Status.FAILED, 'provider_error', False),
        ('canceled', 0.8, Status.CANCELED, 'provider_canceled', True),
        ('aborted', None, Status.EXPIRED, 'provider_aborted', False),
    ],
)
def test_endings_without_a_result_carry_an_error_and_what_replicate_billed(
    provider: ReplicateProvider,
    fake: FakeReplicate,
    raw: str,
    predict_time: float | None,
    status: Status,
    code: str,
    charged: bool,
) -> None:
    job_id = provider.submit(sdxl_job('tsk_a')).provider_job_id
    fake.finish(job_id, raw, error='CUDA out of memory' if raw == 'failed' else None, predict_time=predict_time)
    state = provider.poll(job_id)
    assert (state.status, state.raw_status, state.charged_by_provider) == (status, raw, charged)
    assert state.error is not None and state.error.code == code
    assert state.outputs == () and state.actual_credits is None
    if raw == 'failed':
        assert state.error.message == 'CUDA out of memory'


def test_cancel_asks_replicate_and_returns_its_word(provider: ReplicateProvider, fake: FakeReplicate) -> None:
    job_id = provider.submit(sdxl_job('tsk_a')).provider_job_id
    fake.advance(job_id)
    state = provider.cancel(job_id)
    assert state.status is Status.CANCELED and state.charged_by_provider  # it had started: billed
    assert fake.predictions[job_id]['status'] == 'canceled'


def test_an_unknown_prediction_is_lost(provider: ReplicateProvider) -> None:
    for state in (provider.poll('nosuchprediction'), provider.cancel('nosuchprediction')):
        assert state.status is Status.FAILED
        assert state.error is not None and state.error.code == 'provider_job_lost'


def test_the_webhook_replicate_sends_is_verified_and_normalized(
    provider: ReplicateProvider, fake: FakeReplicate, receiver: WebhookReceiver
) -> None:
    # Given a prediction whose webhook points at a receiver
    job_id = provider.submit(sdxl_job('tsk_a', webhook=receiver.url)).provider_job_id
    # When Replicate finishes it and sends its signed webhook
    fake.finish(job_id, output=['https://replicate.delivery/x/out-0.png', 'https://replicate.delivery/x/out-1.png'])
    hook = receiver.wait_for(lambda r: r.json['id'] == job_id)
    # Then the adapter verifies the raw body and reads the outcome
    state = provider.parse_webhook(hook.headers, hook.body)
    assert (state.provider_job_id, state.status, len(state.outputs)) == (job_id, Status.SUCCEEDED, 2)
    assert state.actual_credits == 12
    assert parse_qs(urlsplit(hook.json['webhook']).query)['atelier_task'] == ['tsk_a']
