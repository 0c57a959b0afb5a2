"""Account deletion's order of steps, its recheck, and its two handlers (DELETE /v1/me and the purge), on fakes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from atelier.identity.claims import ClaimKind
from atelier.identity.deletion import (
    RECHECK_DELAY_SECONDS,
    AccountPurge,
    DeletionState,
    DeletionStatus,
    PurgeReport,
    request_deletion,
)
from atelier.identity.tokens import Claims, Keyring, issue_token, verify_token
from infra.local.template import load_template, resources_of_type
from tests.utils import http_event

RING = Keyring.parse('unit-test-token-key-of-at-least-32-characters', stage='test')
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Recorder:
    """Every port of the deletion in one fake, recording the calls in order."""

    calls: list[str] = field(default_factory=list)
    fail_at: str | None = None

    def _record(self, call: str) -> None:
        self.calls.append(call)
        if call == self.fail_at:
            raise RuntimeError(f'{call} failed')

    def mark(self, account_id: str, now: datetime) -> DeletionState:
        self._record('mark')
        return DeletionState(account_id, DeletionStatus.DELETING, now.isoformat())

    def finish(self, account_id: str, now: datetime) -> DeletionState:
        self._record('finish')
        return DeletionState(account_id, DeletionStatus.DELETED, now.isoformat())

    def send(self, account_id: str, *, recheck: bool = False, delay_seconds: int = 0) -> None:
        self._record(f'send recheck={recheck} delay={delay_seconds}')

    def end_all(self, account_id: str, reason: str) -> int:
        self._record(f'sessions {reason}')
        return 2

    def revoke_all(self, account_id: str, reason: str) -> int:
        self._record(f'api_keys {reason}')
        return 0

    def close_account(self, account_id: str) -> Any:
        self._record('tasks')
        return type('Closed', (), {'ended': 1, 'erased': 3})()

    def delete_prefix(self, prefix: str) -> int:
        self._record(f'delete {prefix}')
        return 1

    def release_all(self, account_id: str, kind: ClaimKind) -> int:
        self._record(f'release {kind.value}')
        return 1

    def delete_raw_bodies(self, account_id: str) -> int:
        self._record('raw bodies')
        return 4


def purge(recorder: Recorder) -> AccountPurge:
    r = recorder
    return AccountPurge(
        marks=r, queue=r, sessions=r, api_keys=r, tasks=r, media=r, claims=r, payments=r, clock=lambda: NOW
    )


def test_the_request_queues_the_purge_before_it_marks_and_revokes():
    # Queued first: once the tokens are revoked the client cannot ask again, so the purge must be on its way
    recorder = Recorder()
    state = request_deletion(
        'acct_1', queue=recorder, marks=recorder, sessions=recorder, api_keys=recorder, now=lambda: NOW
    )
    assert state.status is DeletionStatus.DELETING
    assert recorder.calls == [
        'send recheck=False delay=0',
        'mark',
        'api_keys account_deleted',
        'sessions account_deleted',
    ]


def test_a_request_that_cannot_queue_changes_nothing():
    # Then the client (whose tokens still work) gets an error and asks again
    recorder = Recorder(fail_at='send recheck=False delay=0')
    with pytest.raises(RuntimeError):
        request_deletion('acct_1', queue=recorder, marks=recorder, sessions=recorder, api_keys=recorder)
    assert recorder.calls == ['send recheck=False delay=0']


def test_the_purge_goes_from_access_to_money_to_content_to_identifiers_then_queues_its_recheck():
    recorder = Recorder()
    report = purge(recorder).run('acct_1')
    assert recorder.calls == [
        'mark',
        'api_keys account_deleted',
        'sessions account_deleted',
        'tasks',
        'delete outputs/acct_1/',
        'delete uploads/acct_1/',
        'release DEVICE',
        'release IDENTITY',
        'raw bodies',
        'finish',
        f'send recheck=True delay={RECHECK_DELAY_SECONDS}',
    ]
    assert report == PurgeReport(
        account_id='acct_1',
        status='deleted',
        recheck=False,
        api_keys_revoked=0,
        sessions_revoked=2,
        tasks_ended=1,
        tasks_erased=3,
        objects_deleted=2,
        devices_released=1,
        identities_released=1,
        raw_payment_bodies_deleted=4,
    )


def test_the_recheck_queues_no_third_run_and_a_failure_leaves_the_account_deleting():
    recorder = Recorder()
    purge(recorder).run('acct_1', recheck=True)
    assert not any(call.startswith('send') for call in recorder.calls)
    failing = Recorder(fail_at='delete uploads/acct_1/')
    with pytest.raises(RuntimeError):
        purge(failing).run('acct_1')
    assert 'finish' not in failing.calls and not any(call.startswith('send') for call in failing.calls)


def test_the_recheck_comes_after_every_task_step_that_may_still_write_outputs():
    # Settle and the sweeper copy outputs before they claim the task: one that was copying when the deletion
    # canceled the task writes until its timeout at the latest. SQS delays a message by 900 s at most.
    functions = resources_of_type(load_template(), 'AWS::Serverless::Function')
    timeouts = [functions[name]['Properties']['Timeout'] for name in ('SettleTaskFunction', 'SweepTasksFunction')]
    assert max(timeouts) < RECHECK_DELAY_SECONDS
    assert RECHECK_DELAY_SECONDS <= 900


# ---------------------------------------------------------------- handlers


@dataclass
class Context:
    function_name: str = 'test'
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = 'arn:aws:lambda:us-east-1:123456789012:function:test'
    aws_request_id: str = 'req-1'


class FakeSessions:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def authenticate(self, token: str) -> Claims:
        return verify_token(token, keyring=RING)

    def end_all(self, account_id: str, reason: str) -> int:
        return self.recorder.end_all(account_id, reason)


def test_delete_me_answers_202_with_the_deletion_and_needs_a_token(monkeypatch: pytest.MonkeyPatch):
    from functions.identity_api import app

    recorder = Recorder()
    monkeypatch.setattr('atelier.api.auth.sessions', lambda: FakeSessions(recorder))
    for port in ('deletion_queue', 'deletion_marks', 'api_keys'):
        monkeypatch.setattr(app, port, lambda: recorder)
    monkeypatch.setattr(app, 'sessions', lambda: FakeSessions(recorder))
    token = issue_token('acct_1', 'ses_1', keyring=RING, ttl_seconds=600)
    event = http_event('DELETE', '/v1/me', headers={'authorization': f'Bearer {token}'})
    response = app.lambda_handler(event, Context())
    assert response['statusCode'] == 202
    body = json.loads(response['body'])
    assert (body['account_id'], body['status']) == ('acct_1', 'deleting') and body['requested_at']
    assert recorder.calls[0] == 'send recheck=False delay=0' and recorder.calls[-1] == 'sessions account_deleted'
    refused = app.lambda_handler(http_event('DELETE', '/v1/me'), Context())
    assert refused['statusCode'] == 401 and len(recorder.calls) == 4


def sqs_record(message_id: str, body: str) -> dict[str, Any]:
    return {
        'messageId': message_id,
        'receiptHandle': 'r',
        'body': body,
        'attributes': {
            'ApproximateReceiveCount': '1',
            'SentTimestamp': '0',
            'SenderId': 's',
            'ApproximateFirstReceiveTimestamp': '0',
        },
        'messageAttributes': {},
        'md5OfBody': 'x',
        'eventSource': 'aws:sqs',
        'eventSourceARN': 'arn:aws:sqs:us-east-1:123456789012:q',
        'awsRegion': 'us-east-1',
    }


def test_the_purge_handler_takes_queue_batches_and_ops_events(monkeypatch: pytest.MonkeyPatch):
    from functions.delete_account import app

    runs: list[tuple[str, bool]] = []

    class FakePurge:
        def run(self, account_id: str, *, recheck: bool = False) -> PurgeReport:
            if account_id == 'acct_bad':
                raise RuntimeError('throttled')
            runs.append((account_id, recheck))
            return purge(Recorder()).run(account_id, recheck=recheck)

    monkeypatch.setattr(app, 'account_purge', lambda: FakePurge())
    # From the queue: each message one purge; only the failed one is redelivered (and, five times failed, dead-lettered)
    records = [
        sqs_record('m0', json.dumps({'account_id': 'acct_1', 'recheck': False})),
        sqs_record('m1', json.dumps({'account_id': 'acct_bad', 'recheck': False})),
        sqs_record('m2', json.dumps({'account_id': 'acct_2', 'recheck': True})),
    ]
    assert app.lambda_handler({'Records': records}, Context()) == {'batchItemFailures': [{'itemIdentifier': 'm1'}]}
    assert runs == [('acct_1', False), ('acct_2', True)]
    # From ops (the Lambda console's test event): the report
    report = app.lambda_handler({'account_id': 'acct_3'}, Context())
    assert (report['account_id'], report['status'], report['objects_deleted']) == ('acct_3', 'deleted', 2)
    with pytest.raises(ValueError):
        app.lambda_handler({'account': 'acct_3'}, Context())
