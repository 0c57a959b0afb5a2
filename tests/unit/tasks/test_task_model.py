"""Pure parts of the task domain: item mapping, cursors, routing between steps, failure outcomes, ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from atelier.catalog import load_catalog
from atelier.providers import JobError, JobOutput, JobState, Status
from atelier.storage import StoredObject
from atelier.tasks import Task
from atelier.tasks.models import Outcome, StepResult
from atelier.tasks.service import TaskService, new_task_id, output_key, request_hash
from atelier.tasks.store import InvalidCursor, _decode_cursor, _encode_cursor, task_from_item, task_item

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def make_task(**changes: Any) -> Task:
    base: dict[str, Any] = {
        'task_id': 'tsk_1',
        'account_id': 'acc_1',
        'model_id': 'mock/image',
        'provider': 'mock',
        'status': Status.QUEUED,
        'input': {'prompt': 'a fox', 'num_images': 1},
        'estimated': 4,
        'held': 4,
        'created_at': NOW,
        'updated_at': NOW,
        'deadline_at': NOW + timedelta(seconds=60),
        'request_hash': 'h',
    }
    return Task(**{**base, **changes})


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def service(now: datetime = NOW) -> TaskService:
    # Routing and outcome rules touch neither store nor adapters.
    none: Any = None
    return TaskService(
        store=none,
        ledger=none,
        catalog=load_catalog(),
        providers=none,
        media=none,
        queue=none,
        workflow=none,
        clock=Clock(now),
    )


def test_a_task_survives_the_round_trip_through_its_item() -> None:
    state = JobState(
        provider_job_id='tsk_1',
        status=Status.SUCCEEDED,
        outputs=(JobOutput(url='http://x/0.png', content_type='image/png'),),
        actual_credits=3,
    )
    task = make_task(
        status=Status.SUCCEEDED,
        progress=1.0,
        outputs=(StoredObject(key='outputs/acc_1/tsk_1/0.png', content_type='image/png', size=10, sha256='ab'),),
        provider_job_id='tsk_1',
        provider_state=state,
        outcome=Outcome(status=Status.SUCCEEDED, charge=3),
        error=JobError(code='x', message='y'),
        completed_at=NOW,
    )
    item = task_item(task)
    item['provider_job_id'] = {'S': 'tsk_1'}
    item['provider_state'] = {'S': state.model_dump_json()}
    item['outcome'] = {'S': task.outcome.model_dump_json()}  # type: ignore[union-attr]
    item['outputs'] = {'S': '[' + task.outputs[0].model_dump_json() + ']'}
    item['error'] = {'S': '{"code":"x","message":"y"}'}
    item['progress'] = {'N': '1'}
    item['completed_at'] = item['created_at']
    assert task_from_item(item) == task


def test_only_open_tasks_are_in_the_sweeper_index() -> None:
    assert task_item(make_task())['gsi2pk'] == {'S': 'STATUS#queued'}
    assert task_item(make_task())['gsi2sk']['S'].startswith('2026-01-01T12:01:00.000000Z#')
    assert 'gsi2pk' not in task_item(make_task(status=Status.FAILED))


def test_cursors_belong_to_their_account() -> None:
    cursor = _encode_cursor(make_task())
    key = _decode_cursor(cursor, 'acc_1')
    assert key['gsi1pk'] == {'S': 'ACCOUNT#acc_1'}
    with pytest.raises(InvalidCursor):
        _decode_cursor(cursor, 'acc_2')
    with pytest.raises(InvalidCursor):
        _decode_cursor('not-a-cursor', 'acc_1')


def test_task_ids_sort_by_creation_and_are_valid_execution_names() -> None:
    earlier, later = new_task_id(NOW), new_task_id(NOW + timedelta(milliseconds=1))
    assert earlier < later
    assert len(earlier) <= 80 and earlier.replace('_', '').isalnum()


def test_the_request_hash_ignores_key_order_only() -> None:
    assert request_hash('m', {'a': 1, 'b': 2}) == request_hash('m', {'b': 2, 'a': 1})
    assert request_hash('m', {'a': 1}) != request_hash('m', {'a': 2})
    assert request_hash('m', {'a': 1}) != request_hash('n', {'a': 1})


def test_output_keys_are_per_account_task_and_position() -> None:
    assert output_key('acc', 'tsk', 2, 'video/mp4') == 'outputs/acc/tsk/2.mp4'
    assert output_key('acc', 'tsk', 0, 'application/x-unknown') == 'outputs/acc/tsk/0.bin'


@pytest.mark.parametrize(
    ('changes', 'first', 'expected'),
    [
        ({'status': Status.SUCCEEDED}, True, ('done', 1)),
        ({'provider_job_id': 'j'}, True, ('await', 20)),  # the webhook wait
        ({'provider_job_id': 'j'}, False, ('await', 5)),  # the poll interval
        ({'provider_job_id': 'j', 'deadline_at': NOW + timedelta(seconds=2.5)}, True, ('await', 3)),
        ({'provider_job_id': 'j', 'deadline_at': NOW}, True, ('release', 1)),
        ({'provider_job_id': None}, False, ('release', 1)),
        (
            {'provider_job_id': 'j', 'provider_state': JobState(provider_job_id='j', status=Status.SUCCEEDED)},
            True,
            ('settle', 1),
        ),
        (
            {'provider_job_id': 'j', 'provider_state': JobState(provider_job_id='j', status=Status.FAILED)},
            True,
            ('release', 1),
        ),
        ({'outcome': Outcome(status=Status.CANCELED, charge=0)}, True, ('release', 1)),
    ],
)
def test_routing_between_steps(changes: dict[str, Any], first: bool, expected: tuple[str, int]) -> None:
    result = service()._route(make_task(**changes), first=first)
    assert (result.next, result.wait_seconds) == expected


@pytest.mark.parametrize(
    ('changes', 'caught', 'status', 'code'),
    [
        (
            {
                'provider_state': JobState(
                    provider_job_id='j', status=Status.FAILED, error=JobError(code='e', message='m')
                )
            },
            None,
            Status.FAILED,
            'e',
        ),
        (
            {'provider_state': JobState(provider_job_id='j', status=Status.CANCELED)},
            None,
            Status.CANCELED,
            'provider_error',
        ),
        (
            {'provider_state': JobState(provider_job_id='j', status=Status.SUCCEEDED)},
            None,
            Status.FAILED,
            'settle_failed',
        ),
        ({'deadline_at': NOW}, None, Status.EXPIRED, 'deadline_exceeded'),
        ({'cancel_requested': True}, None, Status.CANCELED, 'canceled'),
        # A cancel the provider never confirmed (Cog's 404, then no webhook) is still a cancel at the deadline
        ({'cancel_requested': True, 'deadline_at': NOW}, None, Status.CANCELED, 'canceled'),
        ({}, {'Error': 'ProviderUnavailable'}, Status.FAILED, 'provider_unavailable'),
        ({}, {'Error': 'States.Runtime'}, Status.FAILED, 'internal_error'),
    ],
)
def test_failure_outcomes_refund_everything(
    changes: dict[str, Any], caught: dict[str, Any] | None, status: Status, code: str
) -> None:
    outcome = service()._failure_outcome(make_task(**changes), caught)
    assert (outcome.status, outcome.charge) == (status, 0)
    assert outcome.error is not None and outcome.error.code == code


def test_a_step_result_needs_a_known_next_step() -> None:
    with pytest.raises(ValueError):
        StepResult.model_validate({'task_id': 't', 'account_id': 'a', 'next': 'dance'})
    with pytest.raises(ValueError):
        StepResult.model_validate({'task_id': 't', 'account_id': 'a', 'next': 'await', 'wait_seconds': 0})


def test_statuses_know_which_are_final() -> None:
    assert {s for s in Status if s.is_final} == {Status.SUCCEEDED, Status.FAILED, Status.CANCELED, Status.EXPIRED}
