"""The Cog adapter's cancel against a fake Cog (an ``httpx.MockTransport``): a 404 is unknown, not canceled.

Cog answers 404 to a cancel of a prediction it has forgotten: one that finished (its final webhook may
still be on its way) or one lost in a restart. The real server is in ``tests/integration/providers``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from atelier.catalog import load_catalog
from atelier.providers import Job, ProviderUnavailable, Status
from atelier.providers.cog.client import CANCEL_GRACE, CogProvider
from atelier.providers.journal import InMemoryJournal

TASK = 'tsk_0000000000001234'
SECRET = 'cog_atelier_test'


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 3, 1, 12, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class FakeCog:
    """Knows the predictions in ``running``; answers cancel 200 for those, 404 for any other (as coglet does)."""

    running: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)
    cancel_status: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path))
        prediction = request.url.path.split('/')[2]
        if request.method == 'PUT':
            self.running.add(prediction)
            return httpx.Response(202, json={'id': prediction, 'status': 'starting'})
        if self.cancel_status is not None:
            return httpx.Response(self.cancel_status)
        return httpx.Response(200, json={}) if prediction in self.running else httpx.Response(404)

    @property
    def puts(self) -> int:
        return sum(1 for method, _ in self.requests if method == 'PUT')


@pytest.fixture
def cog() -> FakeCog:
    return FakeCog()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal() -> InMemoryJournal:
    return InMemoryJournal()


@pytest.fixture
def provider(cog: FakeCog, clock: Clock, journal: InMemoryJournal) -> CogProvider:
    return CogProvider(
        'http://cog.test',
        webhook_secret=SECRET,
        catalog=load_catalog(),
        journal=journal,
        http=httpx.Client(transport=httpx.MockTransport(cog)),
        clock=clock,
    )


def submitted(provider: CogProvider) -> None:
    job = Job(
        task_id=TASK,
        model_id='cog/echo-image',
        provider_model='echo-image',
        input={'prompt': 'a red fox'},
        webhook_url='https://api.example.com/webhooks/providers/cog',
        deadline_seconds=60,
    )
    assert provider.submit(job).status is Status.SUBMITTED


def test_a_404_on_cancel_is_unknown_not_canceled(provider: CogProvider, cog: FakeCog, journal: InMemoryJournal) -> None:
    # Given a prediction Cog has forgotten (it finished; its final webhook may still be on its way)
    submitted(provider)
    cog.running.clear()
    # When the task is canceled
    state = provider.cancel(TASK)
    # Then the answer is not final: the task keeps waiting for the final word
    assert (state.status, state.raw_status, state.is_final) == (Status.RUNNING, 'unknown', False)
    assert state.error is None
    # And the cancel is noted, so that no poll starts the prediction again
    recorded = journal.get('cog', TASK)
    assert recorded is not None and recorded.cancel_requested_at is not None


def test_after_a_cancel_a_poll_never_starts_the_prediction_again(
    provider: CogProvider, cog: FakeCog, clock: Clock
) -> None:
    # Given a canceled prediction Cog no longer knows
    submitted(provider)
    cog.running.clear()
    provider.cancel(TASK)
    # When the task polls within the grace period
    clock.advance(CANCEL_GRACE - timedelta(seconds=1))
    state = provider.poll(TASK)
    # Then it is still unknown, and Cog was not asked to run it again (a repeat PUT would)
    assert (state.status, state.raw_status) == (Status.RUNNING, 'unknown')
    assert cog.puts == 1


def test_without_a_final_word_within_the_grace_a_canceled_prediction_is_canceled(
    provider: CogProvider, cog: FakeCog, clock: Clock
) -> None:
    submitted(provider)
    cog.running.clear()
    provider.cancel(TASK)
    clock.advance(CANCEL_GRACE)
    state = provider.poll(TASK)
    assert state.status is Status.CANCELED and state.is_final
    assert state.error is not None and state.error.code == 'canceled'
    assert not state.charged_by_provider
    assert cog.puts == 1


def test_the_grace_runs_from_the_first_cancel(provider: CogProvider, cog: FakeCog, clock: Clock) -> None:
    # A second cancel (the user taps again, an expired task's release) does not restart the grace
    submitted(provider)
    cog.running.clear()
    provider.cancel(TASK)
    clock.advance(CANCEL_GRACE / 2)
    assert provider.cancel(TASK).raw_status == 'unknown'
    clock.advance(CANCEL_GRACE / 2)
    assert provider.poll(TASK).status is Status.CANCELED


def test_a_cancel_of_a_running_prediction_is_asked_and_awaited(provider: CogProvider, cog: FakeCog) -> None:
    submitted(provider)
    state = provider.cancel(TASK)
    assert (state.status, state.raw_status) == (Status.RUNNING, 'canceling')
    assert provider.poll(TASK).raw_status == 'unknown'
    assert cog.puts == 1


def test_a_cancel_that_cannot_reach_cog_is_retried_and_already_stops_polls(provider: CogProvider, cog: FakeCog) -> None:
    submitted(provider)
    cog.cancel_status = 503
    with pytest.raises(ProviderUnavailable):
        provider.cancel(TASK)
    assert provider.poll(TASK).raw_status == 'unknown'
    assert cog.puts == 1


def test_a_cancel_of_a_job_never_submitted_is_unknown_and_its_poll_lost(provider: CogProvider) -> None:
    assert provider.cancel('tsk_never_submitted').raw_status == 'unknown'
    state = provider.poll('tsk_never_submitted')
    assert state.status is Status.FAILED
    assert state.error is not None and state.error.code == 'provider_job_lost'


def test_without_a_cancel_a_poll_is_still_a_repeat_put(provider: CogProvider, cog: FakeCog) -> None:
    submitted(provider)
    assert provider.poll(TASK).raw_status == 'starting'
    assert cog.puts == 2
