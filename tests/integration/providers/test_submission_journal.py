"""The submission journal's contract, in memory, on moto and on DynamoDB Local (strict about expressions)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from atelier.providers.journal import DynamoDBJournal, InMemoryJournal, SubmissionJournal
from tests.support.dynamodb_local import create_table

NOW = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.fixture(params=['memory', 'moto', pytest.param('ddb_local', marks=pytest.mark.ddb_local)])
def journal(request: pytest.FixtureRequest) -> Iterator[SubmissionJournal]:
    if request.param == 'memory':
        yield InMemoryJournal()
        return
    with mock_aws():
        if request.param == 'moto':
            ddb: Any = boto3.client('dynamodb', region_name='us-east-1')
        else:
            ddb = request.getfixturevalue('dynamodb_local').client()
        table = create_table(ddb, 'TasksTable', f'tasks-{uuid.uuid4().hex[:8]}')
        try:
            yield DynamoDBJournal(table, dynamodb=ddb)
        finally:
            if request.param == 'ddb_local':
                ddb.delete_table(TableName=table)


def test_the_first_claim_wins_and_keeps_the_request(journal: SubmissionJournal) -> None:
    request = {'model_id': 'cog/echo-image', 'input': {'prompt': 'a fox', 'num_images': 2}, 'webhook': 'https://x/y'}
    assert journal.claim('cog', 'tsk_1', attempt=1, now=NOW, request=request)
    assert not journal.claim('cog', 'tsk_1', attempt=1, now=NOW, request={'input': {}})
    submission = journal.get('cog', 'tsk_1')
    assert submission is not None
    assert (submission.attempt, submission.claimed_at, submission.job_id) == (1, NOW, None)
    assert submission.request == request
    # Providers and tasks are separate keys
    assert journal.get('replicate', 'tsk_1') is None and journal.get('cog', 'tsk_2') is None


def test_the_first_job_id_recorded_is_the_one_kept(journal: SubmissionJournal) -> None:
    assert journal.claim('replicate', 'tsk_1', attempt=1, now=NOW)
    assert journal.record('replicate', 'tsk_1', 'pred_a') == 'pred_a'
    assert journal.record('replicate', 'tsk_1', 'pred_a') == 'pred_a'  # the same again: fine
    assert journal.record('replicate', 'tsk_1', 'pred_b') == 'pred_a'  # a late duplicate loses
    submission = journal.get('replicate', 'tsk_1')
    assert submission is not None and submission.job_id == 'pred_a'


def test_a_next_attempt_needs_an_unresolved_claim_of_the_previous_one(journal: SubmissionJournal) -> None:
    assert not journal.claim('replicate', 'tsk_1', attempt=2, now=NOW)  # nothing to follow
    assert journal.claim('replicate', 'tsk_1', attempt=1, now=NOW)
    later = NOW + timedelta(seconds=45)
    assert journal.claim('replicate', 'tsk_1', attempt=2, now=later)
    assert not journal.claim('replicate', 'tsk_1', attempt=2, now=later)  # taken once
    submission = journal.get('replicate', 'tsk_1')
    assert submission is not None and (submission.attempt, submission.claimed_at) == (2, later)
    journal.record('replicate', 'tsk_1', 'pred_a')
    assert not journal.claim('replicate', 'tsk_1', attempt=3, now=later)  # resolved: no more attempts


def test_a_release_frees_only_its_own_unresolved_claim(journal: SubmissionJournal) -> None:
    assert journal.claim('replicate', 'tsk_1', attempt=1, now=NOW)
    journal.release('replicate', 'tsk_1', 2)  # not the holder: nothing happens
    assert journal.get('replicate', 'tsk_1') is not None
    journal.release('replicate', 'tsk_1', 1)
    assert journal.get('replicate', 'tsk_1') is None
    assert journal.claim('replicate', 'tsk_1', attempt=1, now=NOW)
    journal.record('replicate', 'tsk_1', 'pred_a')
    journal.release('replicate', 'tsk_1', 1)  # resolved: kept
    submission = journal.get('replicate', 'tsk_1')
    assert submission is not None and submission.job_id == 'pred_a'


def test_the_first_cancel_noted_is_the_one_kept(journal: SubmissionJournal) -> None:
    # Nothing is noted (or created) for a task the journal never saw
    assert journal.note_cancel('cog', 'tsk_1', NOW) is None
    assert journal.get('cog', 'tsk_1') is None
    # A submission's first cancel is kept: a later one does not move it (its grace runs from the first)
    request = {'model_id': 'cog/echo-image', 'input': {'prompt': 'a fox'}, 'webhook': 'https://x/y'}
    assert journal.claim('cog', 'tsk_1', attempt=1, now=NOW, request=request)
    claimed = journal.get('cog', 'tsk_1')
    assert claimed is not None and claimed.cancel_requested_at is None
    assert journal.note_cancel('cog', 'tsk_1', NOW + timedelta(seconds=5)) == NOW + timedelta(seconds=5)
    assert journal.note_cancel('cog', 'tsk_1', NOW + timedelta(minutes=3)) == NOW + timedelta(seconds=5)
    submission = journal.get('cog', 'tsk_1')
    assert submission is not None
    assert submission.cancel_requested_at == NOW + timedelta(seconds=5)
    assert (submission.attempt, submission.claimed_at, submission.request) == (1, NOW, request)


def test_what_a_provider_said_of_its_job_is_recalled_by_job_id(journal: SubmissionJournal) -> None:
    # Given fal's answer to a submit: the request's URLs, which name the model's app
    details = {
        'task_id': 'tsk_1',
        'model_id': 'fal/flux-dev',
        'input': {'prompt': 'a fox', 'num_images': 2},
        'status_url': 'https://queue.fal.run/fal-ai/flux/requests/req-1/status',
        'response_url': 'https://queue.fal.run/fal-ai/flux/requests/req-1',
        'cancel_url': 'https://queue.fal.run/fal-ai/flux/requests/req-1/cancel',
    }
    journal.remember('fal', 'req-1', details, NOW)
    # Then they are recalled by the request id alone (a webhook or a poll knows nothing else)
    assert journal.recall('fal', 'req-1') == details
    assert journal.recall('fal', 'req-2') is None and journal.recall('replicate', 'req-1') is None
    # And remembering the same again changes nothing
    journal.remember('fal', 'req-1', details, NOW)
    assert journal.recall('fal', 'req-1') == details
