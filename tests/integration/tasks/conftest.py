"""The task domain against moto: tables from the template, the real ledger, S3, and the mock provider over HTTP.

The workflow (Step Functions) and the dispatch queue are fakes that record what the domain asked of them;
the tests drive the state-machine steps themselves, in the order the state machine would.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from atelier.catalog import load_catalog
from atelier.catalog.plans import PlanLimits, Plans
from atelier.ledger import DynamoDBLedgerStore, Ledger, LotKind
from atelier.providers.mock.client import MockProvider
from atelier.providers.mock.server import MockProviderServer
from atelier.providers.registry import ProviderRegistry
from atelier.storage import MediaStore, OutputPolicy
from atelier.tasks import CreateTaskRequest, StepInput, StepResult, Task, TaskService
from atelier.tasks.store import TaskStore
from tests.support.dynamodb_local import create_table
from tests.unit.providers.conftest import SECRET, WebhookReceiver
from tests.unit.providers.conftest import receiver as receiver

REGION = 'us-east-1'
BUCKET = 'atelier-media-test'


@dataclass
class FakeWorkflow:
    started: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)

    def start(self, task_id: str, account_id: str) -> bool:
        if task_id in self.started:
            return False
        self.started.append(task_id)
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
class Clock:
    """The task service's clock; tests move it past deadlines."""

    offset: timedelta = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass
class World:
    service: TaskService
    ledger: Ledger
    store: TaskStore
    s3: Any
    ddb: Any
    workflow: FakeWorkflow
    queue: FakeQueue
    clock: Clock
    provider: MockProviderServer
    receiver: WebhookReceiver
    ledger_table: str = ''

    def account(self, credits: int, *, plan: str = 'free') -> str:
        account_id = f'acc_{uuid.uuid4().hex[:12]}'
        self.ledger.open_account(account_id, plan=plan)
        if credits:
            self.ledger.grant(account_id, amount=credits, kind=LotKind.PAID, business_id=f'test:{account_id}')
        return account_id

    def create(self, account_id: str, model: str = 'mock/image', key: str | None = None, **data: Any) -> Task:
        request = CreateTaskRequest(model=model, input={'prompt': 'a red fox', **data})
        created = self.service.create(account_id, key or uuid.uuid4().hex, request)
        return self.task(created.task.id)

    def task(self, task_id: str) -> Task:
        task = self.store.get(task_id)
        assert task is not None
        return task

    def step(self, task: Task) -> StepInput:
        return StepInput(task_id=task.task_id, account_id=task.account_id)

    def wait_provider(self, task_id: str, timeout: float = 5.0) -> None:
        """Until the mock provider has finished the task's prediction."""
        deadline = time.monotonic() + timeout
        while True:
            prediction = self.provider.get(task_id)
            if prediction is not None and prediction.status in {'succeeded', 'failed', 'canceled'}:
                return
            assert time.monotonic() < deadline, 'the mock provider did not finish'
            time.sleep(0.02)

    def run(self, task: Task, *, webhooks: bool = True) -> StepResult:
        """Drive the state machine's steps for ``task`` until it is done, as the ASL would."""
        result = self.service.submit(self.step(task))
        for _ in range(50):
            if result.next == 'await':
                self.wait_provider(task.task_id)
                if webhooks:
                    self.deliver(task.task_id)
                result = self.service.poll(self.step(task))
            elif result.next == 'settle':
                result = self.service.settle(self.step(task))
            elif result.next == 'release':
                from atelier.tasks import ReleaseInput

                result = self.service.release(ReleaseInput(task_id=task.task_id, account_id=task.account_id))
            else:
                return result
        raise AssertionError('the lifecycle did not end')

    def deliver(self, task_id: str, predicate: Callable[[dict[str, Any]], bool] | None = None) -> list[str]:
        """Hand every webhook the receiver got for the task to the domain, as the API would.

        Without a ``predicate``, waits for the provider's final webhook first.
        """
        if predicate is None:
            final = {'succeeded', 'failed', 'canceled'}
            self.receiver.wait_for(lambda r: r.json['id'] == task_id and r.json['status'] in final)
        results = []
        for hook in list(self.receiver.received):
            if hook.json['id'] == task_id and (predicate is None or predicate(hook.json)):
                results.append(self.service.handle_webhook('mock', hook.headers, hook.body))
        return results

    def balance(self, account_id: str) -> tuple[int, int]:
        account = self.ledger.get_account(account_id)
        return account.available, account.held

    def object(self, key: str) -> tuple[bytes, str]:
        response = self.s3.get_object(Bucket=BUCKET, Key=key)
        return response['Body'].read(), response['ContentType']


class Serialized:
    """A boto3 client whose calls run one at a time.

    DynamoDB applies each request atomically; moto's in-process backend does not when threads call it at
    once (a transaction can read a table mid-write). One lock per request restores what DynamoDB promises
    while the interleaving *between* requests, which is what optimistic concurrency must survive, stays.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return call


def plans(max_concurrent: int = 2) -> Plans:
    return Plans(
        default='free',
        plans={'free': PlanLimits(max_concurrent_tasks=max_concurrent), 'pro': PlanLimits(max_concurrent_tasks=5)},
    )


@pytest.fixture(params=['moto', pytest.param('ddb_local', marks=pytest.mark.ddb_local)])
def world(request: pytest.FixtureRequest, receiver: WebhookReceiver) -> Iterator[World]:
    """Everything on moto; with ``ddb_local``, the tables on Amazon DynamoDB Local (strict about expressions)."""
    with mock_aws():
        if request.param == 'moto':
            ddb: Any = Serialized(boto3.client('dynamodb', region_name=REGION))
        else:
            ddb = request.getfixturevalue('dynamodb_local').client()
        suffix = uuid.uuid4().hex[:8]
        tasks_table = create_table(ddb, 'TasksTable', f'tasks-{suffix}')
        ledger_table = create_table(ddb, 'LedgerTable', f'ledger-{suffix}')
        s3 = boto3.client('s3', region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        server = MockProviderServer(webhook_url=receiver.url, webhook_secret=SECRET, time_scale=0.1)
        server.start()
        catalog = load_catalog()
        ledger = Ledger(DynamoDBLedgerStore(ddb, ledger_table), backoff_base=0.002)
        store = TaskStore(tasks_table, dynamodb=ddb)
        workflow, queue, clock = FakeWorkflow(), FakeQueue(), Clock()
        service = TaskService(
            store=store,
            ledger=ledger,
            catalog=catalog.available({'mock'}),
            providers=ProviderRegistry(
                {'mock': lambda: MockProvider(server.url, webhook_secret=SECRET, catalog=catalog)}
            ),
            # The mock serves its outputs from 127.0.0.1 over http, as offline.
            media=MediaStore(
                BUCKET, s3=s3, policy=OutputPolicy.configure(local_hosts='127.0.0.1', base_urls={'mock': server.url})
            ),
            queue=queue,
            workflow=workflow,
            public_api_url=receiver.url.rsplit('/webhooks/', 1)[0],
            sweep_grace_seconds=0,
            plans=plans(),
            clock=clock,
        )
        try:
            yield World(service, ledger, store, s3, ddb, workflow, queue, clock, server, receiver, ledger_table)
        finally:
            server.stop()
            if request.param == 'ddb_local':
                for table in (tasks_table, ledger_table):
                    ddb.delete_table(TableName=table)
