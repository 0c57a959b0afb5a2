"""A ``cog/echo-image`` task through the task service: moto tables, S3 and the ledger, a real Cog server.

The state-machine steps are driven by the test in the order the ASL runs them; webhooks are handed to
the service as the webhook function would, with the headers and raw body Cog sent.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from atelier.catalog import load_catalog
from atelier.ledger import DynamoDBLedgerStore, Ledger, LotKind
from atelier.providers.cog.client import CogProvider
from atelier.providers.journal import DynamoDBJournal
from atelier.providers.mock.media import PNG_SIGNATURE
from atelier.providers.registry import ProviderRegistry
from atelier.storage import MediaStore
from atelier.tasks import CreateTaskRequest, ReleaseInput, StepInput, StepResult, Task, TaskService, TaskStatus
from atelier.tasks.store import TaskStore
from tests.integration.providers.conftest import COG_SECRET, CogServer, Receiver
from tests.integration.tasks.conftest import Clock
from tests.support.dynamodb_local import create_table

REGION = 'us-east-1'
BUCKET = 'atelier-media-cog'
#: Shorter than cog/echo-image's 60 s deadline, so that a test sees the grace end before the deadline.
CANCEL_GRACE = timedelta(seconds=30)


@dataclass
class FakeWorkflow:
    resumed: list[str] = field(default_factory=list)

    def start(self, task_id: str, account_id: str) -> bool:
        return True

    def resume(self, token: str) -> bool:
        self.resumed.append(token)
        return True


@dataclass
class FakeQueue:
    sent: list[str] = field(default_factory=list)

    def send(self, task_id: str, account_id: str) -> None:
        self.sent.append(task_id)


@dataclass
class CogWorld:
    service: TaskService
    ledger: Ledger
    store: TaskStore
    s3: Any
    cog: CogServer
    receiver: Receiver
    clock: Clock

    def account(self, credits: int) -> str:
        account_id = f'acc_{uuid.uuid4().hex[:12]}'
        self.ledger.open_account(account_id, plan='free')
        self.ledger.grant(account_id, amount=credits, kind=LotKind.PAID, business_id=f'test:{account_id}')
        return account_id

    def create(self, account_id: str, **data: Any) -> Task:
        request = CreateTaskRequest(model='cog/echo-image', input={'prompt': 'a red fox', **data})
        created = self.service.create(account_id, uuid.uuid4().hex, request)
        self.cog.track(created.task.id)
        task = self.store.get(created.task.id)
        assert task is not None
        return task

    def run(self, task: Task) -> Task:
        """Submit, hand over the final webhook, then poll -> settle/release, as the state machine would."""
        step = StepInput(task_id=task.task_id, account_id=task.account_id)
        result: StepResult = self.service.submit(step)
        assert result.next == 'await'
        hook = self.receiver.final(task.task_id)
        assert self.service.handle_webhook('cog', hook.headers, hook.body) == 'recorded'
        result = self.service.poll(step)
        if result.next == 'settle':
            result = self.service.settle(step)
        elif result.next == 'release':
            result = self.service.release(ReleaseInput(task_id=task.task_id, account_id=task.account_id))
        assert result.next == 'done'
        done = self.store.get(task.task_id)
        assert done is not None
        return done

    def balance(self, account_id: str) -> tuple[int, int]:
        account = self.ledger.get_account(account_id)
        return account.available, account.held

    def entries(self, account_id: str, task_id: str) -> list[tuple[str, int]]:
        """The task's ledger entries: (kind, amount)."""
        items = self.ledger.list_entries(account_id, limit=50).items
        return sorted((e.kind.value, e.amount) for e in items if e.task_id == task_id)

    def finished_unseen(self, task: Task) -> Any:
        """Submit ``task`` and let its prediction finish without its final webhook reaching the task.

        Cog then forgets the prediction (a cancel answers 404); the final webhook, caught by the receiver,
        is returned for the test to deliver late, or never.
        """
        assert self.service.submit(StepInput(task_id=task.task_id, account_id=task.account_id)).next == 'await'
        hook = self.receiver.final(task.task_id)
        self.cog.wait_idle()
        return hook


@pytest.fixture
def world(cog: CogServer, receiver: Receiver) -> Iterator[CogWorld]:
    with mock_aws():
        ddb = boto3.client('dynamodb', region_name=REGION)
        suffix = uuid.uuid4().hex[:8]
        tasks_table = create_table(ddb, 'TasksTable', f'tasks-{suffix}')
        ledger_table = create_table(ddb, 'LedgerTable', f'ledger-{suffix}')
        s3 = boto3.client('s3', region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        catalog = load_catalog()
        ledger = Ledger(DynamoDBLedgerStore(ddb, ledger_table), backoff_base=0.002)
        store = TaskStore(tasks_table, dynamodb=ddb)
        journal = DynamoDBJournal(tasks_table, dynamodb=ddb)
        clock = Clock()

        def provider() -> CogProvider:
            return CogProvider(
                cog.url,
                webhook_secret=COG_SECRET,
                catalog=catalog,
                journal=journal,
                clock=clock,
                cancel_grace=CANCEL_GRACE,
            )

        service = TaskService(
            store=store,
            ledger=ledger,
            catalog=catalog.available({'cog'}),
            providers=ProviderRegistry({'cog': provider}),
            media=MediaStore(BUCKET, s3=s3),
            queue=FakeQueue(),
            workflow=FakeWorkflow(),
            public_api_url=receiver.url,
            sweep_grace_seconds=0,
            clock=clock,
        )
        yield CogWorld(service, ledger, store, s3, cog, receiver, clock)


def test_an_echo_image_task_succeeds_with_its_pngs_in_s3_and_the_catalog_price_charged(world: CogWorld) -> None:
    # Given a two-image task (one credit per image: two held)
    account = world.account(10)
    task = world.create(account, num_images=2, resolution='512x512')
    assert task.held == 2
    # When its lifecycle runs against the Cog server
    done = world.run(task)
    # Then it succeeded, the data: URI outputs are PNG objects in S3, and what it delivered was charged
    assert done.status is TaskStatus.SUCCEEDED
    assert (done.charged, done.refunded) == (2, 0)
    assert world.balance(account) == (8, 0)
    assert [o.key for o in done.outputs] == [f'outputs/{account}/{task.task_id}/{n}.png' for n in range(2)]
    for output in done.outputs:
        body = world.s3.get_object(Bucket=BUCKET, Key=output.key)
        assert body['ContentType'] == 'image/png'
        assert body['Body'].read().startswith(PNG_SIGNATURE)


def test_a_failing_echo_image_task_refunds_everything(world: CogWorld) -> None:
    account = world.account(10)
    task = world.create(account, prompt='fail this one')
    done = world.run(task)
    assert done.status is TaskStatus.FAILED
    assert done.error is not None and done.error.code == 'provider_error'
    assert (done.charged, done.refunded) == (0, 1)
    assert world.balance(account) == (10, 0)


def test_a_submit_retried_after_a_crash_finds_the_running_prediction(
    world: CogWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a submit step that dies after Cog accepted the prediction, before the task recorded it
    account = world.account(10)
    task = world.create(account, prompt='slow fox')
    step = StepInput(task_id=task.task_id, account_id=account)
    original = world.store.mark_submitted

    def crash(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError('the Lambda died here')

    monkeypatch.setattr(world.store, 'mark_submitted', crash)
    with pytest.raises(RuntimeError):
        world.service.submit(step)
    monkeypatch.setattr(world.store, 'mark_submitted', original)
    # When the state machine retries the step
    assert world.service.submit(step).next == 'await'
    # Then the task follows the one prediction already running under its id
    resubmitted = world.store.get(task.task_id)
    assert resubmitted is not None and resubmitted.provider_job_id == task.task_id
    assert world.service.providers.get('cog').poll(task.task_id).raw_status in {'starting', 'processing'}
    assert world.cog.health() == 'BUSY'
    # And a cancel stops it; the final webhook settles the task as canceled with everything refunded
    world.service.cancel(account, task.task_id)
    hook = world.receiver.final(task.task_id)
    assert world.service.handle_webhook('cog', hook.headers, hook.body) == 'recorded'
    assert world.service.release(ReleaseInput(task_id=task.task_id, account_id=account)).next == 'done'
    done = world.store.get(task.task_id)
    assert done is not None and done.status is TaskStatus.CANCELED
    assert world.balance(account) == (10, 0)


def test_a_cancel_answered_404_keeps_waiting_and_the_late_success_is_delivered_and_charged_once(
    world: CogWorld,
) -> None:
    # Given a task whose prediction has just succeeded, its final webhook still on its way
    account = world.account(10)
    task = world.create(account)
    step = StepInput(task_id=task.task_id, account_id=account)
    hook = world.finished_unseen(task)
    assert hook.json['status'] == 'succeeded'
    # When the user cancels: Cog no longer knows the prediction (404)
    view = world.service.cancel(account, task.task_id)
    # Then the task is not canceled, nothing is refunded: it waits for the provider's final word
    assert view.cancel_requested and not view.status.is_final
    assert (view.credits.charged, view.credits.refunded) == (0, 0)
    assert world.balance(account) == (9, 1)
    # And the wait's poll does not run the prediction again
    assert world.service.poll(step).next == 'await'
    assert world.cog.health() == 'READY'
    assert [h.json['status'] for h in world.receiver.of(task.task_id)].count('succeeded') == 1
    # When the late `succeeded` webhook arrives
    assert world.service.handle_webhook('cog', hook.headers, hook.body) == 'recorded'
    assert world.service.poll(step).next == 'settle'
    assert world.service.settle(step).next == 'done'
    # Then the user gets the result, charged exactly once: the hold captured, nothing released or refunded
    done = world.store.get(task.task_id)
    assert done is not None and done.status is TaskStatus.SUCCEEDED
    assert (done.charged, done.refunded) == (1, 0)
    assert world.balance(account) == (9, 0)
    assert world.entries(account, task.task_id) == [('capture', 0), ('hold', -1)]
    png = base64.b64decode(hook.json['output'][0].split(',', 1)[1])
    [output] = done.outputs
    assert world.s3.get_object(Bucket=BUCKET, Key=output.key)['Body'].read() == png
    # And a settle or release repeated by the state machine changes nothing
    assert world.service.settle(step).next == 'done'
    assert world.service.release(ReleaseInput(task_id=task.task_id, account_id=account)).next == 'done'
    assert world.balance(account) == (9, 0)
    assert world.entries(account, task.task_id) == [('capture', 0), ('hold', -1)]


@pytest.mark.parametrize(
    'seconds',
    [
        pytest.param(CANCEL_GRACE.total_seconds() + 1, id='grace-over'),
        pytest.param(61, id='deadline-first'),
    ],
)
def test_a_cancel_answered_404_without_any_final_webhook_ends_canceled_and_refunded(
    world: CogWorld, seconds: float
) -> None:
    # Given a task whose prediction Cog has forgotten and whose final webhook never reaches the task
    account = world.account(10)
    task = world.create(account)
    step = StepInput(task_id=task.task_id, account_id=account)
    world.finished_unseen(task)
    # When the user cancels (404) and the wait's polls learn nothing within the grace
    view = world.service.cancel(account, task.task_id)
    assert view.cancel_requested and not view.status.is_final
    assert world.service.poll(step).next == 'await'
    # And the grace period (or, if it comes first, the task's deadline) passes
    world.clock.advance(seconds)
    result = world.service.poll(step)
    # Then the task is decided canceled, and the whole hold released
    assert result.next == 'release'
    assert world.service.release(ReleaseInput(task_id=task.task_id, account_id=account)).next == 'done'
    done = world.store.get(task.task_id)
    assert done is not None and done.status is TaskStatus.CANCELED
    assert done.error is not None and done.error.code == 'canceled'
    assert (done.charged, done.refunded) == (0, 1)
    assert world.balance(account) == (10, 0)
    assert world.entries(account, task.task_id) == [('hold', -1), ('release', 1)]
    # And no poll ever ran the canceled prediction again
    assert world.cog.health() == 'READY'
    assert [h.json['status'] for h in world.receiver.of(task.task_id)].count('succeeded') == 1
