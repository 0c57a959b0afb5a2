"""Cancel in every state, and the sweeper that finishes whatever is stuck past its deadline."""

from __future__ import annotations

import pytest

from atelier.tasks import AwaitInput, TaskStatus
from atelier.tasks.errors import TaskFinished, TaskNotFound
from tests.integration.tasks.conftest import World


def test_cancel_before_submit_is_immediate_and_refunds_everything(world: World) -> None:
    account = world.account(20)
    task = world.create(account)
    view = world.service.cancel(account, task.task_id)
    assert view.status is TaskStatus.CANCELED
    assert (view.credits.charged, view.credits.refunded) == (0, 4)
    assert world.balance(account) == (20, 0)
    # The execution that starts later does nothing
    assert world.service.submit(world.step(task)).next == 'done'
    assert world.provider.get(task.task_id) is None


def test_cancel_while_running_settles_by_the_providers_final_word(world: World) -> None:
    account = world.account(20)
    task = world.create(account, 'mock/slow')
    world.service.submit(world.step(task))
    world.service.await_provider(AwaitInput(task_id=task.task_id, account_id=account, token='token-1'))
    view = world.service.cancel(account, task.task_id)
    assert view.cancel_requested and not view.status.is_final
    # The provider stops; its final word (by webhook) wakes the wait, and the task is released
    world.wait_provider(task.task_id)
    world.deliver(task.task_id)
    assert world.workflow.resumed == ['token-1']
    world.run(task)
    done = world.task(task.task_id)
    assert done.status is TaskStatus.CANCELED
    assert world.balance(account) == (20, 0)


def test_cancel_of_a_finished_task_is_a_conflict(world: World) -> None:
    account = world.account(20)
    task = world.create(account)
    world.run(task)
    with pytest.raises(TaskFinished):
        world.service.cancel(account, task.task_id)


def test_another_accounts_task_does_not_exist(world: World) -> None:
    account, other = world.account(20), world.account(20)
    task = world.create(account)
    with pytest.raises(TaskNotFound):
        world.service.get(other, task.task_id)
    with pytest.raises(TaskNotFound):
        world.service.cancel(other, task.task_id)
    assert world.task(task.task_id).status is TaskStatus.QUEUED


def test_sweeper_expires_a_task_that_never_ran(world: World) -> None:
    # Given a task whose execution never started (its message was lost)
    account = world.account(20)
    task = world.create(account)
    assert world.service.sweep() == 0  # not due yet
    # When its deadline passes
    world.clock.advance(61)
    assert world.service.sweep() == 1
    # Then it is expired and refunded, and a second sweep finds nothing
    done = world.task(task.task_id)
    assert done.status is TaskStatus.EXPIRED
    assert world.balance(account) == (20, 0)
    assert world.service.sweep() == 0


def test_sweeper_cancels_a_running_job_and_wakes_its_wait(world: World) -> None:
    account = world.account(20)
    task = world.create(account, 'mock/slow')
    world.service.submit(world.step(task))
    world.service.await_provider(AwaitInput(task_id=task.task_id, account_id=account, token='token-s'))
    world.clock.advance(11)
    assert world.service.sweep() == 1
    assert world.task(task.task_id).status is TaskStatus.EXPIRED
    assert world.workflow.resumed == ['token-s']
    world.wait_provider(task.task_id)
    # The woken execution finds the task finished
    assert world.service.poll(world.step(task)).next == 'done'
    assert world.balance(account) == (20, 0)


def test_sweeper_settles_a_task_whose_provider_finished(world: World) -> None:
    account = world.account(20)
    task = world.create(account)
    world.service.submit(world.step(task))
    world.wait_provider(task.task_id)
    world.deliver(task.task_id)
    world.clock.advance(61)
    assert world.service.sweep() == 1
    done = world.task(task.task_id)
    assert done.status is TaskStatus.SUCCEEDED
    assert world.balance(account) == (16, 0)
