"""The lifecycle handlers stay thin: they parse, call one domain function, and answer with the right status."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from atelier.errors import DomainError
from atelier.identity.tokens import Claims, Keyring, issue_token, verify_token
from atelier.ledger import ConcurrencyLimitExceeded, InsufficientCredits
from atelier.providers import InvalidWebhookSignature
from atelier.tasks import Created, TaskPage, TaskStatus, TaskView
from atelier.tasks.errors import IdempotencyKeyReused, TaskNotFound
from atelier.tasks.models import StepResult, TaskCredits
from tests.utils import http_event

KEY = 'unit-test-token-key-of-at-least-32-characters'
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Context:
    function_name: str = 'test'
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = 'arn:aws:lambda:us-east-1:123456789012:function:test'
    aws_request_id: str = 'req-1'


def view(task_id: str = 'tsk_1') -> TaskView:
    return TaskView(
        id=task_id,
        model='mock/image',
        status=TaskStatus.QUEUED,
        input={'prompt': 'x'},
        credits=TaskCredits(estimated=4, held=4, charged=0, refunded=0),
        outputs=[],
        error=None,
        progress=None,
        cancel_requested=False,
        created_at=NOW,
        updated_at=NOW,
        completed_at=None,
        deadline_at=NOW,
    )


@dataclass
class FakeService:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    error: DomainError | None = None
    new: bool = True

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.error is not None:
            raise self.error

    def create(self, account_id: str, key: str | None, request: Any) -> Created:
        self._call('create', account_id, key, request.model)
        return Created(task=view(), new=self.new)

    def get(self, account_id: str, task_id: str) -> TaskView:
        self._call('get', account_id, task_id)
        return view(task_id)

    def list(self, account_id: str, **kwargs: Any) -> TaskPage:
        self._call('list', account_id, kwargs)
        return TaskPage(items=[view()], next_cursor=None)

    def cancel(self, account_id: str, task_id: str) -> TaskView:
        self._call('cancel', account_id, task_id)
        return view(task_id)

    def handle_webhook(self, provider: str, headers: dict[str, str], body: bytes) -> str:
        self._call('webhook', provider, body)
        return 'recorded'

    def dispatch(self, task_id: str, account_id: str) -> bool:
        self._call('dispatch', task_id)
        return True

    def submit(self, step: Any) -> StepResult:
        self._call('submit', step.task_id)
        return StepResult(task_id=step.task_id, account_id=step.account_id, next='await', wait_seconds=20)


RING = Keyring.parse(KEY, stage='test')


class FakeSessions:
    """Checks the token as the real sessions do, every session open."""

    def authenticate(self, token: str) -> Claims:
        return verify_token(token, keyring=RING)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeService:
    service = FakeService()
    monkeypatch.setattr('atelier.api.auth.sessions', lambda: FakeSessions())
    for module in ('tasks_api', 'provider_webhook', 'dispatch_task', 'submit_task'):
        monkeypatch.setattr(f'functions.{module}.app.task_service', lambda: service)
    return service


def call(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    from functions.tasks_api.app import lambda_handler

    token = issue_token('acc_1', 'ses_1', keyring=RING, ttl_seconds=600)
    all_headers = {'authorization': f'Bearer {token}', 'content-type': 'application/json', **(headers or {})}
    path, _, query = path.partition('?')
    params = dict(part.split('=', 1) for part in query.split('&')) if query else None
    event = http_event(method, path, body=None if body is None else json.dumps(body), headers=all_headers, query=params)
    response = lambda_handler(event, Context())
    return response['statusCode'], json.loads(response['body'])


def test_create_is_202_and_passes_the_idempotency_key(fake: FakeService) -> None:
    status, body = call(
        'POST', '/v1/tasks', {'model': 'mock/image', 'input': {'prompt': 'x'}}, {'Idempotency-Key': 'k1'}
    )
    assert status == 202
    assert body['id'] == 'tsk_1' and body['credits']['held'] == 4
    assert fake.calls == [('create', ('acc_1', 'k1', 'mock/image'))]


def test_a_replay_is_200(fake: FakeService) -> None:
    fake.new = False
    status, _ = call('POST', '/v1/tasks', {'model': 'mock/image', 'input': {}}, {'Idempotency-Key': 'k1'})
    assert status == 200


@pytest.mark.parametrize(
    ('error', 'status', 'code'),
    [
        (InsufficientCredits('no'), 402, 'insufficient_credits'),
        (ConcurrencyLimitExceeded('busy'), 429, 'concurrency_limit'),
        (IdempotencyKeyReused('other body'), 409, 'idempotency_key_reused'),
        (TaskNotFound('no'), 404, 'task_not_found'),
    ],
)
def test_domain_errors_become_statuses(fake: FakeService, error: DomainError, status: int, code: str) -> None:
    fake.error = error
    got, body = call('POST', '/v1/tasks', {'model': 'mock/image', 'input': {}}, {'Idempotency-Key': 'k'})
    assert (got, body['error']['code']) == (status, code)


def test_unknown_body_fields_are_422(fake: FakeService) -> None:
    status, body = call('POST', '/v1/tasks', {'model': 'mock/image', 'input': {}, 'extra': 1}, {'Idempotency-Key': 'k'})
    assert (status, body['error']['code']) == (422, 'validation_error')
    assert fake.calls == []


def test_no_token_is_401(fake: FakeService) -> None:
    from functions.tasks_api.app import lambda_handler

    response = lambda_handler(http_event('GET', '/v1/tasks/tsk_1'), Context())
    assert response['statusCode'] == 401


def test_get_list_and_cancel(fake: FakeService) -> None:
    assert call('GET', '/v1/tasks/tsk_9')[1]['id'] == 'tsk_9'
    assert call('POST', '/v1/tasks/tsk_9/cancel')[0] == 202
    status, body = call('GET', '/v1/tasks?status=running&limit=5')
    assert status == 200 and len(body['items']) == 1
    assert fake.calls[-1] == ('list', ('acc_1', {'limit': 5, 'status': TaskStatus.RUNNING, 'cursor': None}))
    assert call('GET', '/v1/tasks?status=dancing')[0] == 422


def test_the_webhook_handler_verifies_the_raw_body(fake: FakeService) -> None:
    from functions.provider_webhook.app import lambda_handler

    raw = '{"id": "tsk_1",   "status": "succeeded"}'
    event = http_event('POST', '/webhooks/providers/mock', body=raw, headers={'content-type': 'application/json'})
    response = lambda_handler(event, Context())
    assert response['statusCode'] == 200
    assert fake.calls == [('webhook', ('mock', raw.encode()))]
    fake.error = InvalidWebhookSignature('bad')
    assert lambda_handler(event, Context())['statusCode'] == 401


def test_the_dispatcher_reports_only_the_failed_records(fake: FakeService, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.dispatch_task.app import lambda_handler

    def dispatch(task_id: str, account_id: str) -> bool:
        if task_id == 'tsk_bad':
            raise RuntimeError('throttled')
        return True

    monkeypatch.setattr(fake, 'dispatch', dispatch)
    records = [
        {
            'messageId': f'm{n}',
            'receiptHandle': 'r',
            'body': json.dumps({'task_id': task_id, 'account_id': 'acc_1'}),
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
        for n, task_id in enumerate(['tsk_ok', 'tsk_bad'])
    ]
    result = lambda_handler({'Records': records}, Context())
    assert result == {'batchItemFailures': [{'itemIdentifier': 'm1'}]}


def test_a_step_handler_takes_and_returns_the_step_models(fake: FakeService) -> None:
    from functions.submit_task.app import lambda_handler

    result = lambda_handler({'task_id': 'tsk_1', 'account_id': 'acc_1', 'next': 'await'}, Context())
    assert result == {'task_id': 'tsk_1', 'account_id': 'acc_1', 'next': 'await', 'wait_seconds': 20}
