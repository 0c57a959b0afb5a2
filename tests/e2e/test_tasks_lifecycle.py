"""Generation tasks end to end on the offline stack, over HTTP: every mock model, webhooks, retries, cancel.

The real template runs on moto: the API creates the task (hold + task + idempotency record in one
transaction), SQS hands it to the dispatcher, the state machine submits it to the mock provider (a real
HTTP server), waits for its signed webhook (or polls), copies outputs into S3 and settles the credits.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import pytest

from atelier.ledger import DynamoDBLedgerStore, Ledger, LotKind
from atelier.providers.mock.media import PNG_SIGNATURE
from atelier.providers.signing import sign
from tests.e2e.conftest import Stack, User

pytestmark = pytest.mark.stack

FINAL = {'succeeded', 'failed', 'canceled', 'expired'}
MOCK_SECRET = 'mock_atelier_local'


def funded(stack: Stack, credits: int) -> User:
    """A new signed-in user with ``credits`` paid credits."""
    user = stack.sign_in()
    ledger = Ledger(DynamoDBLedgerStore(stack.client('dynamodb'), stack.physical_id('LedgerTable')))
    ledger.grant(user.account_id, amount=credits, kind=LotKind.PAID, business_id=f'e2e:{user.account_id}')
    return user


def create(user: User, model: str, key: str | None = None, **data: Any) -> httpx.Response:
    return user.post(
        '/v1/tasks',
        json={'model': model, 'input': {'prompt': 'a red fox', **data}},
        headers={'Idempotency-Key': key or uuid.uuid4().hex},
    )


def wait_final(user: User, task_id: str, timeout: float = 40.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, Any] = user.get(f'/v1/tasks/{task_id}').json()
        if task['status'] in FINAL:
            return task
        assert time.monotonic() < deadline, f'task still {task["status"]} after {timeout}s'
        time.sleep(0.25)


def balance(user: User) -> dict[str, int]:
    me: dict[str, Any] = user.get('/v1/me').json()
    return me['balance']  # type: ignore[no-any-return]


def entries(user: User, task_id: str) -> list[tuple[str, int]]:
    items = user.get('/v1/ledger', params={'limit': 50}).json()['items']
    return sorted((e['kind'], e['amount']) for e in items if e.get('task_id') == task_id)


def run(user: User, model: str, **data: Any) -> dict[str, Any]:
    response = create(user, model, **data)
    assert response.status_code == 202, response.text
    return wait_final(user, response.json()['id'])


def mock_provider(stack: Stack) -> Any:
    return stack.server.services['mock_provider']


# ---------------------------------------------------------------- every mock model


def test_mock_image_succeeds_and_its_png_is_served_from_s3(stack: Stack) -> None:
    user = funded(stack, 20)
    task = run(user, 'mock/image', num_images=2)
    assert task['status'] == 'succeeded'
    assert task['credits'] == {'estimated': 8, 'held': 8, 'charged': 8, 'refunded': 0}
    assert task['error'] is None and task['completed_at']
    assert len(task['outputs']) == 2
    for output in task['outputs']:
        image = httpx.get(output['url'])
        assert image.status_code == 200
        assert image.content.startswith(PNG_SIGNATURE)
        assert output['content_type'] == 'image/png' and output['size'] == len(image.content)
    assert {kind for kind, _ in entries(user, task['id'])} == {'hold', 'capture'}
    assert balance(user) == {'available': 12, 'held': 0}


def test_mock_video_reports_progress_and_releases_what_it_did_not_cost(stack: Stack) -> None:
    user = funded(stack, 50)
    response = create(user, 'mock/video', duration_seconds=4)
    task_id = response.json()['id']
    seen: set[float] = set()
    deadline = time.monotonic() + 40
    while (task := user.get(f'/v1/tasks/{task_id}').json())['status'] not in FINAL:
        if task['progress'] is not None:
            seen.add(task['progress'])
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert task['status'] == 'succeeded'
    assert any(0 < p < 1 for p in seen), seen
    assert task['credits']['charged'] < task['credits']['estimated']
    assert task['credits']['charged'] + task['credits']['refunded'] == task['credits']['held'] == 14
    video = httpx.get(task['outputs'][0]['url'])
    assert video.headers['content-type'] == 'video/mp4' and video.content[4:8] == b'ftyp'
    assert balance(user) == {'available': 50 - task['credits']['charged'], 'held': 0}


def test_mock_fail_refunds_everything(stack: Stack) -> None:
    user = funded(stack, 20)
    task = run(user, 'mock/fail')
    assert task['status'] == 'failed'
    assert task['error']['code'] == 'provider_error'
    assert task['credits'] == {'estimated': 4, 'held': 4, 'charged': 0, 'refunded': 4}
    assert task['outputs'] == []
    assert {kind for kind, _ in entries(user, task['id'])} == {'hold', 'release'}
    assert balance(user) == {'available': 20, 'held': 0}


def test_mock_slow_misses_its_deadline_and_is_refunded(stack: Stack) -> None:
    user = funded(stack, 20)
    task = run(user, 'mock/slow')
    assert task['status'] == 'expired'
    assert task['error']['code'] == 'deadline_exceeded'
    assert task['credits']['refunded'] == 4
    assert balance(user) == {'available': 20, 'held': 0}
    # The provider was told to stop working on it
    deadline = time.monotonic() + 5
    while mock_provider(stack).get(task['id']).status != 'canceled':
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_mock_no_webhook_is_found_by_polling(stack: Stack) -> None:
    user = funded(stack, 20)
    task = run(user, 'mock/no-webhook')
    assert task['status'] == 'succeeded'
    assert httpx.get(task['outputs'][0]['url']).content.startswith(PNG_SIGNATURE)
    assert [d for d in mock_provider(stack).deliveries if d[0] == task['id']] == []
    assert balance(user) == {'available': 16, 'held': 0}


# ---------------------------------------------------------------- webhooks


def post_webhook(stack: Stack, body: bytes, *, secret: str = MOCK_SECRET, provider: str = 'mock') -> httpx.Response:
    headers = {'content-type': 'application/json', **sign(secret, body)}
    return stack.http.post(f'/webhooks/providers/{provider}', content=body, headers=headers)


def test_duplicate_and_late_webhooks_change_nothing(stack: Stack) -> None:
    user = funded(stack, 20)
    task = run(user, 'mock/image')
    final_word = json.dumps(mock_provider(stack).get(task['id']).to_json()).encode()
    # The provider's final webhook, again (a retry) and much later: accepted, ignored
    for _ in range(2):
        response = post_webhook(stack, final_word)
        assert response.status_code == 200
        assert response.json()['result'] == 'ignored'
    # Even a late "failed" for the same job cannot undo the settlement
    failed = json.loads(final_word) | {'status': 'failed', 'error': 'late', 'output': []}
    assert post_webhook(stack, json.dumps(failed).encode()).status_code == 200
    assert user.get(f'/v1/tasks/{task["id"]}').json()['status'] == 'succeeded'
    assert balance(user) == {'available': 16, 'held': 0}


def test_webhooks_for_unknown_or_foreign_tasks_are_404(stack: Stack) -> None:
    body = json.dumps({'id': f'tsk_unknown{uuid.uuid4().hex}', 'status': 'succeeded', 'output': []}).encode()
    assert post_webhook(stack, body).status_code == 404
    assert post_webhook(stack, body, provider='not-configured').status_code == 404


def test_a_webhook_with_a_bad_signature_is_401_and_changes_nothing(stack: Stack) -> None:
    user = funded(stack, 20)
    task = run(user, 'mock/image')
    forged = json.dumps({'id': task['id'], 'status': 'failed', 'error': 'forged', 'output': []}).encode()
    response = post_webhook(stack, forged, secret='not-the-secret')
    assert response.status_code == 401
    assert response.json()['error']['code'] == 'invalid_signature'
    unsigned = stack.http.post('/webhooks/providers/mock', content=forged, headers={'content-type': 'application/json'})
    assert unsigned.status_code == 401
    assert user.get(f'/v1/tasks/{task["id"]}').json()['status'] == 'succeeded'


# ---------------------------------------------------------------- retries, cancel, idempotency


def test_a_step_that_fails_once_is_retried(stack: Stack) -> None:
    # Given a provider that answers 503 to the first submit
    user = funded(stack, 20)
    task = run(user, 'mock/image', fail_submits=1)
    # Then the Submit step failed once, was retried by the state machine, and the task succeeded
    assert task['status'] == 'succeeded'
    assert mock_provider(stack).submit_attempts[task['id']] == 2
    failures = [i for i in stack.invocations if i.function == 'SubmitTaskFunction' and i.error]
    assert any('ProviderUnavailable' in str(i.error) for i in failures)
    assert balance(user) == {'available': 16, 'held': 0}


def test_cancel_while_running_refunds_and_a_finished_task_cannot_be_canceled(stack: Stack) -> None:
    user = funded(stack, 20)
    task_id = create(user, 'mock/slow').json()['id']
    deadline = time.monotonic() + 10
    while user.get(f'/v1/tasks/{task_id}').json()['status'] not in {'submitted', 'running'}:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    response = user.post(f'/v1/tasks/{task_id}/cancel')
    assert response.status_code == 202
    task = wait_final(user, task_id, timeout=15)
    assert task['status'] == 'canceled'
    assert task['credits']['refunded'] == 4
    assert balance(user) == {'available': 20, 'held': 0}
    again = user.post(f'/v1/tasks/{task_id}/cancel')
    assert (again.status_code, again.json()['error']['code']) == (409, 'task_finished')


def test_idempotency_key_semantics_over_http(stack: Stack) -> None:
    user = funded(stack, 20)
    first = create(user, 'mock/image', key='same-key')
    again = create(user, 'mock/image', key='same-key')
    other = create(user, 'mock/image', key='same-key', num_images=2)
    missing = user.post('/v1/tasks', json={'model': 'mock/image', 'input': {'prompt': 'x'}})
    # (the header is required by the document: without it the request breaks the schema, 422 validation_error)
    assert (first.status_code, again.status_code, other.status_code, missing.status_code) == (202, 200, 409, 422)
    assert missing.json()['error']['code'] == 'validation_error'
    assert again.json()['id'] == first.json()['id']
    wait_final(user, first.json()['id'])
    assert balance(user) == {'available': 16, 'held': 0}


def test_limits_and_validation_over_http(stack: Stack) -> None:
    poor = funded(stack, 3)
    assert create(poor, 'mock/image').status_code == 402
    user = funded(stack, 100)
    unknown = create(user, 'nope/model')
    assert (unknown.status_code, unknown.json()['error']['code']) == (404, 'unknown_model')
    assert create(user, 'mock/image', num_images=99).status_code == 422
    slow = [create(user, 'mock/slow') for _ in range(2)]
    assert [r.status_code for r in slow] == [202, 202]
    limited = create(user, 'mock/image')
    assert (limited.status_code, limited.json()['error']['code']) == (429, 'concurrency_limit')
    for response in slow:
        user.post(f'/v1/tasks/{response.json()["id"]}/cancel')


# ---------------------------------------------------------------- reading tasks, uploads, catalog


def test_tasks_are_private_and_listed_newest_first(stack: Stack) -> None:
    user, other = funded(stack, 20), funded(stack, 20)
    task = run(user, 'mock/fail')
    assert other.get(f'/v1/tasks/{task["id"]}').status_code == 404
    assert other.post(f'/v1/tasks/{task["id"]}/cancel').status_code == 404
    listed = user.get('/v1/tasks', params={'status': 'failed', 'limit': 10}).json()
    assert [t['id'] for t in listed['items']] == [task['id']]
    assert other.get('/v1/tasks').json()['items'] == []


def test_a_task_can_use_its_own_upload_but_not_anothers(stack: Stack) -> None:
    user, other = funded(stack, 20), funded(stack, 20)
    png = b'\x89PNG\r\n\x1a\n' + b'0' * 100
    upload = user.post('/v1/uploads', json={'content_type': 'image/png', 'size': len(png)})
    assert upload.status_code == 200, upload.text
    form = upload.json()
    assert form['key'].startswith(f'uploads/{user.account_id}/')
    # The signed POST policy lets S3 accept only this content type and at most the declared size
    policy = json.loads(base64.b64decode(form['upload']['fields']['policy']))
    assert ['content-length-range', 1, len(png)] in policy['conditions']
    assert {'Content-Type': 'image/png'} in policy['conditions']
    posted = httpx.post(
        form['upload']['url'], data=form['upload']['fields'], files={'file': ('in.png', png, 'image/png')}
    )
    assert posted.status_code in {200, 204}, posted.text
    # Another account's upload: refused, nothing held
    foreign = create(other, 'mock/image', image=form['key'])
    assert (foreign.status_code, foreign.json()['error']['code']) == (403, 'foreign_upload')
    assert balance(other) == {'available': 20, 'held': 0}
    # Its own: accepted
    assert run(user, 'mock/image', image=form['key'])['status'] == 'succeeded'
    assert user.post('/v1/uploads', json={'content_type': 'text/html', 'size': 10}).status_code == 422


def test_models_and_estimates(stack: Stack) -> None:
    user = stack.sign_in()
    models = {m['id']: m for m in user.get('/v1/models').json()['items']}
    assert {'mock/image', 'mock/video', 'mock/fail', 'mock/slow', 'mock/no-webhook'} <= models.keys()
    assert 'prompt' in models['mock/image']['input_schema']['properties']
    estimate = user.post('/v1/estimates', json={'model': 'mock/video', 'input': {'prompt': 'x', 'duration_seconds': 4}})
    assert estimate.json() == {'model': 'mock/video', 'credits': 14}


def test_the_webhook_wakes_the_wait_so_the_provider_is_polled_once(stack: Stack) -> None:
    # Given an image task whose provider answers by webhook
    user = funded(stack, 20)
    task = run(user, 'mock/image')
    # Then its execution waited with its token, was woken by the webhook, and asked the provider only once
    sfn = stack.client('stepfunctions')
    machine = stack.physical_id('TaskStateMachine')
    execution = machine.replace(':stateMachine:', ':execution:') + f':{task["id"]}'
    events = sfn.get_execution_history(executionArn=execution, maxResults=1000)['events']
    entered = [e['stateEnteredEventDetails']['name'] for e in events if 'stateEnteredEventDetails' in e]
    assert entered[:3] == ['Submit', 'Route', 'AwaitProvider']
    assert entered.count('Poll') == 1, entered
    assert entered[-2:] == ['Settle', 'Done']
    assert not [e for e in events if e['type'] == 'TaskFailed'], 'the wait for the webhook failed'


def test_wrong_json_types_are_422_not_coerced(stack: Stack) -> None:
    # Given a funded user
    user = funded(stack, 20)
    # When numbers arrive as booleans or strings
    for response in (
        create(user, 'mock/image', num_images=True),
        create(user, 'mock/image', num_images='2'),
        user.post('/v1/uploads', json={'content_type': 'image/png', 'size': True}),
    ):
        # Then each is refused as invalid input and nothing is held
        assert response.status_code == 422, response.text
    assert balance(user) == {'available': 20, 'held': 0}
