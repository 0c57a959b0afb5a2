"""Creating a task: one transaction (hold + task + idempotency record), idempotency keys, limits, validation."""

from __future__ import annotations

import dataclasses
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from atelier.catalog import UnknownModel
from atelier.errors import DomainError, InvalidInput
from atelier.ledger import ConcurrencyLimitExceeded, InsufficientCredits
from atelier.tasks import CreateTaskRequest, TaskStatus
from atelier.tasks.errors import ForeignUpload, IdempotencyKeyReused, InvalidIdempotencyKey, UploadNotFound
from tests.integration.tasks.conftest import BUCKET, World, plans


def test_create_holds_the_estimate_and_queues_the_task(world: World) -> None:
    # Given an account with 20 credits
    account = world.account(20)
    # When it creates a 2-image task (4 credits an image)
    task = world.create(account, num_images=2)
    # Then the task is queued, 8 credits are held, and it went to the dispatch queue
    assert task.status is TaskStatus.QUEUED
    assert (task.estimated, task.held) == (8, 8)
    assert world.balance(account) == (12, 8)
    assert world.queue.sent == [task.task_id]
    assert world.ledger.list_entries(account).items[0].id == f'task:{task.task_id}:hold'


def test_same_key_and_body_is_the_same_task(world: World) -> None:
    account = world.account(20)
    request = CreateTaskRequest(model='mock/image', input={'prompt': 'a fox'})
    first = world.service.create(account, 'key-1', request)
    again = world.service.create(account, 'key-1', request)
    assert (first.new, again.new) == (True, False)
    assert again.task.id == first.task.id
    assert world.balance(account) == (16, 4)


def test_racing_retries_of_one_key_on_the_last_credits_all_get_the_one_task(world: World) -> None:
    # Given an account that can pay for exactly one image task
    account = world.account(4)
    request = CreateTaskRequest(model='mock/image', input={'prompt': 'a fox'})
    # When a client's retries of the same request race (same Idempotency-Key)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: world.service.create(account, 'retry-key', request), range(8)))
    # Then every retry answers with the one task: none is told there is no credit
    assert len({r.task.id for r in results}) == 1
    assert sum(r.new for r in results) == 1
    assert world.balance(account) == (0, 4)


def test_same_key_with_another_body_is_a_conflict(world: World) -> None:
    account = world.account(20)
    world.service.create(account, 'key-2', CreateTaskRequest(model='mock/image', input={'prompt': 'a fox'}))
    with pytest.raises(IdempotencyKeyReused) as caught:
        world.service.create(account, 'key-2', CreateTaskRequest(model='mock/image', input={'prompt': 'a cat'}))
    assert caught.value.kind.value == 'conflict'
    assert world.balance(account) == (16, 4)


def test_keys_are_per_account(world: World) -> None:
    one, two = world.account(20), world.account(20)
    request = CreateTaskRequest(model='mock/image', input={'prompt': 'a fox'})
    assert world.service.create(one, 'shared', request).task.id != world.service.create(two, 'shared', request).task.id


@pytest.mark.parametrize('key', [None, '', ' ', 'k' * 256])
def test_the_idempotency_key_is_required(world: World, key: str | None) -> None:
    account = world.account(20)
    with pytest.raises(InvalidIdempotencyKey):
        world.service.create(account, key, CreateTaskRequest(model='mock/image', input={'prompt': 'x'}))


def test_concurrent_creates_hold_exactly_what_the_account_can_pay(world: World) -> None:
    # Given an account that can pay for exactly 10 image tasks, on a plan that allows 50 at once
    service = dataclasses.replace(world.service, plans=plans(max_concurrent=50))
    account = world.account(40)

    def create(n: int) -> str:
        try:
            service.create(account, f'k{n}', CreateTaskRequest(model='mock/image', input={'prompt': f'fox {n}'}))
        except DomainError as exc:
            return exc.code
        return 'created'

    # When 30 creates race
    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(pool.map(create, range(30)))
    # Then exactly 10 are accepted and the rest are refused for credit
    assert results.count('created') == 10
    assert results.count('insufficient_credits') == 20
    assert world.balance(account) == (0, 40)
    assert len(world.queue.sent) == 10


def test_the_plan_limits_concurrent_tasks(world: World) -> None:
    account = world.account(100)  # free: 2 at once
    world.create(account)
    world.create(account)
    with pytest.raises(ConcurrencyLimitExceeded) as caught:
        world.create(account)
    assert caught.value.code == 'concurrency_limit'
    assert world.balance(account) == (92, 8)


def test_not_enough_credits_is_402_and_nothing_is_written(world: World) -> None:
    account = world.account(3)
    with pytest.raises(InsufficientCredits):
        world.create(account)
    assert world.balance(account) == (3, 0)
    assert world.store.list_for_account(account, limit=10)[0] == []


def test_unknown_model_and_invalid_input_hold_nothing(world: World) -> None:
    account = world.account(20)
    with pytest.raises(UnknownModel):
        world.create(account, model='fal/flux-dev')  # in the catalog, but its provider is not configured
    with pytest.raises(InvalidInput):
        world.create(account, num_images=99)
    assert world.balance(account) == (20, 0)


def test_a_task_may_only_use_its_own_accounts_uploads(world: World) -> None:
    account, other = world.account(20), world.account(20)
    world.s3.put_object(Bucket=BUCKET, Key=f'uploads/{other}/theirs.png', Body=b'png')
    world.s3.put_object(Bucket=BUCKET, Key=f'uploads/{account}/mine.png', Body=b'png')
    # Another account's upload: refused, nothing held
    with pytest.raises(ForeignUpload):
        world.create(account, image=f'uploads/{other}/theirs.png')
    # Its own upload that does not exist: refused
    with pytest.raises(UploadNotFound):
        world.create(account, image=f'uploads/{account}/missing.png')
    assert world.balance(account) == (20, 0)
    # Its own upload: accepted, and the provider gets a URL, not the key
    task = world.create(account, image=f'uploads/{account}/mine.png')
    world.service.submit(world.step(task))
    prediction = world.provider.get(task.task_id)
    assert prediction is not None
    assert str(prediction.input['image']).startswith('http')


def test_estimate_prices_without_holding(world: World) -> None:
    assert world.service.estimate('mock/video', {'prompt': 'x', 'duration_seconds': 4}).credits == 14
    with pytest.raises(InvalidInput):
        world.service.estimate('mock/video', {'prompt': 'x', 'duration_seconds': 40})


def test_listing_is_per_account_newest_first_with_cursor_and_status(world: World) -> None:
    service = dataclasses.replace(world.service, plans=plans(max_concurrent=50))
    account, other = world.account(100), world.account(100)
    ids = [
        service.create(
            account, uuid.uuid4().hex, CreateTaskRequest(model='mock/image', input={'prompt': str(n)})
        ).task.id
        for n in range(5)
    ]
    service.create(other, 'x', CreateTaskRequest(model='mock/image', input={'prompt': 'theirs'}))
    world.service.cancel(account, ids[0])
    first = service.list(account, limit=3, status=None, cursor=None)
    rest = service.list(account, limit=3, status=None, cursor=first.next_cursor)
    assert [t.id for t in first.items + rest.items] == ids[::-1]
    assert rest.next_cursor is None
    canceled = service.list(account, limit=10, status=TaskStatus.CANCELED, cursor=None)
    assert [t.id for t in canceled.items] == [ids[0]]
    with pytest.raises(DomainError):
        service.list(other, limit=3, status=None, cursor=first.next_cursor)
