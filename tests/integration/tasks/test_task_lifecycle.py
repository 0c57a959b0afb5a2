"""The lifecycle against moto and the mock provider: every mock model, settle/release idempotency, webhooks."""

from __future__ import annotations

import hashlib
import json

import pytest

from atelier.errors import NotFound
from atelier.providers import InvalidWebhookSignature, ProviderUnavailable
from atelier.providers.mock.media import PNG_SIGNATURE
from atelier.providers.signing import sign
from atelier.tasks import AwaitInput, ReleaseInput, TaskStatus
from tests.integration.tasks.conftest import SECRET, World


def test_image_succeeds_by_webhook_with_its_png_in_s3(world: World) -> None:
    # Given an image task
    account = world.account(20)
    task = world.create(account, num_images=2)
    # When the lifecycle runs with the provider's webhook
    assert world.run(task).next == 'done'
    # Then it succeeded, the actual cost was captured, and nothing is held
    done = world.task(task.task_id)
    assert done.status is TaskStatus.SUCCEEDED
    assert (done.charged, done.refunded) == (8, 0)
    assert world.balance(account) == (12, 0)
    assert done.completed_at is not None and done.progress == 1
    # And both outputs are ours in S3: key, bytes, content type, size and sha256
    assert [o.key for o in done.outputs] == [f'outputs/{account}/{task.task_id}/{n}.png' for n in range(2)]
    for output in done.outputs:
        body, content_type = world.object(output.key)
        assert body.startswith(PNG_SIGNATURE)
        assert content_type == 'image/png' == output.content_type
        assert (output.size, output.sha256) == (len(body), hashlib.sha256(body).hexdigest())


def test_video_captures_the_actual_cost_and_releases_the_rest(world: World) -> None:
    account = world.account(50)
    task = world.create(account, 'mock/video', duration_seconds=4)
    assert task.held == 14
    world.service.submit(world.step(task))
    # While running, progress webhooks show through
    world.receiver.wait_for(lambda r: r.json['id'] == task.task_id and r.json['progress'] == 0.5)
    assert world.deliver(task.task_id, lambda body: body['status'] == 'processing')[0] == 'progress'
    running = world.task(task.task_id)
    assert running.status is TaskStatus.RUNNING
    assert running.progress is not None and running.progress >= 0.25
    world.run(task)
    done = world.task(task.task_id)
    assert done.status is TaskStatus.SUCCEEDED
    assert done.charged == 8 < done.estimated  # 2 + 3 a second for the 2 seconds produced
    assert done.refunded == 6
    assert world.balance(account) == (42, 0)
    body, content_type = world.object(done.outputs[0].key)
    assert content_type == 'video/mp4' and body[4:8] == b'ftyp'


def test_provider_failure_refunds_everything(world: World) -> None:
    account = world.account(20)
    task = world.create(account, 'mock/fail')
    world.run(task)
    done = world.task(task.task_id)
    assert done.status is TaskStatus.FAILED
    assert done.error is not None and done.error.code == 'provider_error'
    assert (done.charged, done.refunded) == (0, 4)
    assert world.balance(account) == (20, 0)
    assert done.outputs == ()


def test_no_webhook_is_found_by_polling(world: World) -> None:
    account = world.account(20)
    task = world.create(account, 'mock/no-webhook')
    world.run(task, webhooks=False)
    assert world.task(task.task_id).status is TaskStatus.SUCCEEDED
    assert [r for r in world.receiver.received if r.json['id'] == task.task_id] == []
    assert world.balance(account) == (16, 0)


def test_slow_misses_its_deadline_is_canceled_at_the_provider_and_refunded(world: World) -> None:
    account = world.account(20)
    task = world.create(account, 'mock/slow')
    first = world.service.submit(world.step(task))
    assert first.next == 'await'
    assert 1 <= first.wait_seconds <= 5
    # Still running before the deadline: wait again, at most until the deadline
    again = world.service.poll(world.step(task))
    assert again.next == 'await' and again.wait_seconds <= 2
    # When the deadline passes
    world.clock.advance(11)
    assert world.service.poll(world.step(task)).next == 'release'
    world.service.release(ReleaseInput(task_id=task.task_id, account_id=account))
    done = world.task(task.task_id)
    assert done.status is TaskStatus.EXPIRED
    assert done.error is not None and done.error.code == 'deadline_exceeded'
    assert world.balance(account) == (20, 0)
    # And the provider was told to stop
    world.wait_provider(task.task_id)
    prediction = world.provider.get(task.task_id)
    assert prediction is not None and prediction.status == 'canceled'


def test_settle_and_release_are_idempotent(world: World) -> None:
    account = world.account(20)
    task = world.create(account)
    world.run(task)
    entries = len(world.ledger.list_entries(account).items)
    # Re-running any step after the end changes nothing
    assert world.service.settle(world.step(task)).next == 'done'
    assert world.service.release(ReleaseInput(task_id=task.task_id, account_id=account)).next == 'done'
    assert world.service.submit(world.step(task)).next == 'done'
    assert world.service.poll(world.step(task)).next == 'done'
    assert len(world.ledger.list_entries(account).items) == entries
    assert world.balance(account) == (16, 0)
    assert world.task(task.task_id).status is TaskStatus.SUCCEEDED


def test_a_settle_interrupted_after_the_claim_is_completed_once(world: World) -> None:
    # Given a settle that claimed the outcome and captured, then died before writing the final status
    account = world.account(20)
    task = world.create(account)
    world.service.submit(world.step(task))
    world.wait_provider(task.task_id)
    world.service.poll(world.step(task))
    claimed = world.task(task.task_id)
    assert claimed.provider_state is not None
    outcome = world.service._success_outcome(claimed, claimed.provider_state)
    world.store.claim_outcome(task.task_id, outcome, world.clock())
    world.ledger.capture(account, task_id=task.task_id, amount=outcome.charge)
    # When settle runs again (Step Functions retries it), and the sweeper too
    world.service.settle(world.step(task))
    world.clock.advance(120)
    assert world.service.sweep() == 0
    # Then the capture happened once and the task is final
    assert world.balance(account) == (16, 0)
    assert world.task(task.task_id).status is TaskStatus.SUCCEEDED


def test_submit_never_submits_twice_and_survives_a_transient_error(world: World) -> None:
    account = world.account(20)
    task = world.create(account, fail_submits=1)
    with pytest.raises(ProviderUnavailable):
        world.service.submit(world.step(task))  # the state machine retries this
    assert world.task(task.task_id).status is TaskStatus.QUEUED
    world.service.submit(world.step(task))
    world.service.submit(world.step(task))
    assert world.provider.submit_attempts[task.task_id] == 2
    assert world.task(task.task_id).provider_job_id == task.task_id
    world.run(task)
    assert world.task(task.task_id).status is TaskStatus.SUCCEEDED


def test_duplicate_and_late_webhooks_change_nothing(world: World) -> None:
    account = world.account(20)
    task = world.create(account)
    world.service.submit(world.step(task))
    world.service.await_provider(AwaitInput(task_id=task.task_id, account_id=account, token='token-1'))
    world.wait_provider(task.task_id)
    hook = world.receiver.wait_for(lambda r: r.json['id'] == task.task_id and r.json['status'] == 'succeeded')
    # The first final webhook is recorded and wakes the wait; the duplicate is ignored
    assert world.service.handle_webhook('mock', hook.headers, hook.body) == 'recorded'
    assert world.workflow.resumed == ['token-1']
    assert world.service.handle_webhook('mock', hook.headers, hook.body) == 'ignored'
    world.run(task)
    # A late one, after the task is final, is ignored too
    assert world.service.handle_webhook('mock', hook.headers, hook.body) == 'ignored'
    assert world.workflow.resumed == ['token-1']
    assert world.balance(account) == (16, 0)


def test_webhooks_for_unknown_tasks_or_with_bad_signatures_are_refused(world: World) -> None:
    account = world.account(20)
    task = world.create(account)
    world.service.submit(world.step(task))
    body = json.dumps({'id': 'tsk_unknown', 'status': 'succeeded', 'output': []}).encode()
    with pytest.raises(NotFound):
        world.service.handle_webhook('mock', sign(SECRET, body), body)
    with pytest.raises(NotFound):
        world.service.handle_webhook('fal', sign(SECRET, body), body)  # not a configured provider
    forged = json.dumps({'id': task.task_id, 'status': 'failed', 'error': 'forged'}).encode()
    with pytest.raises(InvalidWebhookSignature):
        world.service.handle_webhook('mock', sign('wrong-secret', forged), forged)
    assert world.task(task.task_id).provider_state is None


def test_the_wait_is_woken_at_once_when_the_outcome_is_already_known(world: World) -> None:
    account = world.account(20)
    task = world.create(account)
    world.service.submit(world.step(task))
    world.wait_provider(task.task_id)
    world.deliver(task.task_id)  # the webhook came before the wait stored its token
    world.service.await_provider(AwaitInput(task_id=task.task_id, account_id=account, token='token-late'))
    assert world.workflow.resumed == ['token-late']
    assert world.task(task.task_id).token == 'token-late'
