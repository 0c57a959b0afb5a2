"""Fixtures of the ledger integration tests: the same tests run on moto and on DynamoDB Local."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from moto import mock_aws

from atelier.ledger import DynamoDBLedgerStore, Ledger
from tests.support.dynamodb_local import CREDENTIALS, REGION, create_table

START = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeClock:
    """The ledger's clock, moved by the test."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class Backend:
    """A DynamoDB (moto or DynamoDB Local) with a fresh LedgerTable per call of :meth:`new_table`."""

    name: str
    client: Any
    make_client: Callable[[], Any]
    tables: list[str] = field(default_factory=list)

    def new_table(self) -> str:
        name = create_table(self.client, 'LedgerTable', f'ledger-{uuid.uuid4().hex[:12]}')
        self.tables.append(name)
        return name

    def ledger(self, table: str | None = None, *, clock: FakeClock | None = None, client: Any = None) -> Ledger:
        store = DynamoDBLedgerStore(client or self.client, table or self.new_table())
        return Ledger(store, clock=clock or FakeClock(), backoff_base=0.002)

    def drop_tables(self) -> None:
        for name in self.tables:
            self.client.delete_table(TableName=name)
        self.tables.clear()


@pytest.fixture(params=['moto', pytest.param('ddb_local', marks=pytest.mark.ddb_local)])
def ledger_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """The store backend: moto in-process, or Amazon DynamoDB Local (a fresh table per ``new_table``)."""
    if request.param == 'moto':
        with mock_aws():

            def moto_client() -> Any:
                return boto3.client('dynamodb', region_name=REGION, **CREDENTIALS)

            yield Backend('moto', moto_client(), moto_client)
        return
    instance = request.getfixturevalue('dynamodb_local')
    backend = Backend('ddb_local', instance.client(), instance.client)
    yield backend
    backend.drop_tables()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(ledger_backend: Backend, clock: FakeClock) -> Ledger:
    """A ledger on a fresh table of the current backend, with a clock the test moves."""
    return ledger_backend.ledger(clock=clock)
