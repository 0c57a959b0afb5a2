"""Payments through the real handler functions, on moto: tables from the template, secrets in SSM, and a fake
Stripe API (``STRIPE_API_BASE``) that knows every Stripe event a test posts, as Stripe knows what it sends: the
backend asks it which PaymentIntent paid an invoice (``GET /v1/invoice_payments``).

Every test gets a fresh ``mock_aws`` world with the process-wide caches (settings, secrets, boto3 clients,
the ledger, the payments service) cleared, and talks to the handlers with API Gateway HTTP API (payload
2.0) events, as the gateway would.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from atelier.ledger import Account, Entry
from infra.local.fake_stripe import FakeStripeServer
from infra.local.runtime import LambdaContext
from infra.local.template import table_definitions
from tests.support_payments import RC_AUTH, STRIPE_SECRET, rc_request, stripe_request
from tests.utils import http_event

REGION = 'us-east-1'
STAGE = 'test'
TABLES = {
    'LedgerTable': 'atelier-test-ledger',
    'EventsTable': 'atelier-test-events',
    'TasksTable': 'atelier-test-tasks',
}
SECRETS = {
    'auth-token-secret': 'test-token-secret-of-at-least-32-characters',
    'stripe-webhook-secret': STRIPE_SECRET,
    'stripe-api-key': 'sk_test_atelier_local',
    'revenuecat-webhook-auth': RC_AUTH,
    'revenuecat-api-key': 'rc_api_atelier_local',
}


@dataclass
class Reply:
    status: int
    body: Any

    def __repr__(self) -> str:
        return f'Reply({self.status}, {self.body!r})'


def clear_caches() -> None:
    import atelier.aws
    import atelier.config
    import atelier.payments.service
    import atelier.wiring

    atelier.config.get_settings.cache_clear()
    atelier.config.clear_secrets()
    atelier.aws.client.cache_clear()
    atelier.wiring.reset()
    atelier.payments.service.payments_service.cache_clear()


class World:
    """What a test can do: open accounts, post provider events, read balances, entries and stored events."""

    def __init__(
        self,
        ddb: Any,
        *,
        stripe_api: FakeStripeServer,
        events_table: str = TABLES['EventsTable'],
        ledger_table: str = TABLES['LedgerTable'],
    ) -> None:
        self.ddb = ddb
        self.stripe_api = stripe_api  # the fake Stripe at STRIPE_API_BASE (a test that moves it sets this too)
        self.events_table = events_table
        self.ledger_table = ledger_table

    # ---------------------------------------------------------------- setup
    def account(self, *, plan: str = 'free') -> str:
        from atelier.wiring import ledger

        account_id = f'acc_{uuid.uuid4().hex[:16]}'
        ledger().open_account(account_id, plan=plan)
        return account_id

    def token(self, account_id: str) -> str:
        """An access token of a new session of the account (as a sign-in would give)."""
        from atelier.wiring import sessions

        return sessions().start(account_id).access_token

    # ---------------------------------------------------------------- calls through the handlers
    def invoke(self, module: str, event: dict[str, Any]) -> Reply:
        import importlib

        handler = importlib.import_module(f'functions.{module}.app').lambda_handler
        response = handler(event, LambdaContext(function_name=module))
        body = response.get('body')
        return Reply(response['statusCode'], json.loads(body) if body else None)

    def stripe(self, event: dict[str, Any] | str, **options: Any) -> Reply:
        """Stripe posting ``event``; the fake Stripe API knows its objects first (an invoice's payments)."""
        with contextlib.suppress(ValueError):
            parsed = json.loads(event) if isinstance(event, str) else event
            if isinstance(parsed, dict):
                self.stripe_api.objects.record(parsed)
        return self.invoke('stripe_webhook', stripe_request(event, **options))

    def rc(self, body: dict[str, Any] | str, **options: Any) -> Reply:
        return self.invoke('revenuecat_webhook', rc_request(body, **options))

    def api(
        self, method: str, path: str, account_id: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        all_headers = {'authorization': f'Bearer {self.token(account_id)}', 'content-type': 'application/json'}
        all_headers.update(headers or {})
        raw = json.dumps(body) if body is not None else None
        return self.invoke('payments_api', http_event(method, path, body=raw, headers=all_headers))

    def replay(self, request: dict[str, Any]) -> Any:
        from functions.replay_payment_event.app import lambda_handler

        return lambda_handler(request, LambdaContext(function_name='replay_payment_event'))

    def backfill(self, request: dict[str, Any]) -> Any:
        from functions.backfill_payments.app import lambda_handler

        return lambda_handler(request, LambdaContext(function_name='backfill_payments'))

    # ---------------------------------------------------------------- what a user would see
    def get(self, account_id: str) -> Account:
        from atelier.wiring import ledger

        return ledger().get_account(account_id)

    def balance(self, account_id: str) -> int:
        return self.get(account_id).available

    def plan(self, account_id: str) -> str:
        return self.get(account_id).plan

    def entries(self, account_id: str) -> list[Entry]:
        from atelier.wiring import ledger

        return list(ledger().list_entries(account_id, limit=100).items)

    def business_ids(self, account_id: str) -> list[str]:
        return sorted(e.id for e in self.entries(account_id))

    def stored(self, provider: str, event_id: str) -> Any:
        return self.table().get_event(provider, event_id)

    def table(self) -> Any:
        from atelier.payments.store import PaymentsTable

        return PaymentsTable(self.events_table, self.ddb)

    def event_items(self) -> list[dict[str, Any]]:
        items = self.ddb.scan(TableName=self.events_table)['Items']
        return [i for i in items if i['pk']['S'].startswith('EVENT#')]

    def raw(self, provider: str, event_id: str) -> bytes | None:
        """The raw body as received, while it is kept."""
        return self.table().raw_body(provider, event_id)

    def event_item(self, provider: str, event_id: str, sk: str = 'EVENT') -> dict[str, Any] | None:
        """An event's record (``EVENT``) or raw body (``RAW``) item as stored."""
        key = {'pk': {'S': f'EVENT#{provider}#{event_id}'}, 'sk': {'S': sk}}
        item: dict[str, Any] | None = self.ddb.get_item(TableName=self.events_table, Key=key).get('Item')
        return item

    def reconciled(self, account_id: str) -> bool:
        from atelier.wiring import ledger

        return ledger().reconcile(account_id).ok


def environment(**overrides: str) -> dict[str, str]:
    return {
        'AWS_ACCESS_KEY_ID': 'testing',
        'AWS_SECRET_ACCESS_KEY': 'testing',
        'AWS_SESSION_TOKEN': 'testing',
        'AWS_DEFAULT_REGION': REGION,
        'AWS_REGION': REGION,
        'STAGE': STAGE,
        'POWERTOOLS_SERVICE_NAME': 'atelier',
        'POWERTOOLS_METRICS_NAMESPACE': 'Atelier',
        'POWERTOOLS_LOG_LEVEL': 'WARNING',
        'LEDGER_TABLE': TABLES['LedgerTable'],
        'TASKS_TABLE': TABLES['TasksTable'],
        'EVENTS_TABLE': TABLES['EventsTable'],
        'MEDIA_BUCKET': 'atelier-test-media',
        'TASK_QUEUE_URL': 'https://sqs.us-east-1.amazonaws.com/123456789012/tasks',
        'TASK_STATE_MACHINE_ARN': 'arn:aws:states:us-east-1:123456789012:stateMachine:atelier-test-tasks',
        'SECRETS_PREFIX': f'/atelier/{STAGE}/',
        'PAYMENTS_LIVE_MODE': 'false',
        'STRIPE_API_BASE': '',
        **overrides,
    }


@pytest.fixture(scope='session')
def stripe_fake() -> Iterator[FakeStripeServer]:
    """The fake Stripe API of the payments tests (one per session; what it knows is keyed by unique ids)."""
    with FakeStripeServer() as fake:
        yield fake


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, stripe_fake: FakeStripeServer) -> Iterator[dict[str, str]]:
    stripe_fake.unavailable.clear()
    values = environment(STRIPE_API_BASE=stripe_fake.base_url)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv('AWS_ENDPOINT_URL', raising=False)
    yield values


@pytest.fixture
def world(env: dict[str, str], stripe_fake: FakeStripeServer) -> Iterator[World]:
    with mock_aws():
        ddb = boto3.client('dynamodb', region_name=REGION)
        definitions = table_definitions()
        for logical_id, name in TABLES.items():
            ddb.create_table(**{**definitions[logical_id], 'TableName': name})
        ssm = boto3.client('ssm', region_name=REGION)
        for name, value in SECRETS.items():
            ssm.put_parameter(Name=f'/atelier/{STAGE}/{name}', Value=value, Type='SecureString')
        clear_caches()
        yield World(ddb, stripe_api=stripe_fake)
    clear_caches()


@pytest.fixture
def local_world(dynamodb_local: Any, monkeypatch: pytest.MonkeyPatch, stripe_fake: FakeStripeServer) -> Iterator[World]:
    """Like ``world``, but the tables are on Amazon DynamoDB Local (real transaction semantics under
    concurrency, which moto does not have); SSM stays on moto."""
    suffix = uuid.uuid4().hex[:8]
    names = {logical_id: f'{name}-{suffix}' for logical_id, name in TABLES.items()}
    values = environment(
        LEDGER_TABLE=names['LedgerTable'],
        EVENTS_TABLE=names['EventsTable'],
        TASKS_TABLE=names['TasksTable'],
        STRIPE_API_BASE=stripe_fake.base_url,
    )
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv('AWS_ENDPOINT_URL_DYNAMODB', dynamodb_local.endpoint)
    with mock_aws():
        ddb = boto3.client('dynamodb', region_name=REGION)
        definitions = table_definitions()
        for logical_id, name in names.items():
            ddb.create_table(**{**definitions[logical_id], 'TableName': name})
        ssm = boto3.client('ssm', region_name=REGION)
        for name, value in SECRETS.items():
            ssm.put_parameter(Name=f'/atelier/{STAGE}/{name}', Value=value, Type='SecureString')
        clear_caches()
        yield World(ddb, stripe_api=stripe_fake, events_table=names['EventsTable'], ledger_table=names['LedgerTable'])
    clear_caches()


def personal_data_in(record: dict[str, Any], body: Any) -> list[str]:
    """The values of ``record`` (an item) that are personal data of the event ``body``: its emails, names,
    phone numbers and addresses, or anything that looks like an email."""
    personal: set[str] = set()

    def collect(value: Any, under: str = '') -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                collect(inner, under if under else key if _PERSONAL_KEY.search(key) else '')
        elif isinstance(value, list):
            for inner in value:
                collect(inner, under)
        elif isinstance(value, str) and value and (under or '@' in value):
            personal.add(value)

    collect(body)
    found: list[str] = []

    def scan(value: Any) -> None:
        if isinstance(value, dict):
            for inner in value.values():
                scan(inner)
        elif isinstance(value, list):
            for inner in value:
                scan(inner)
        elif isinstance(value, str) and (value in personal or '@' in value):
            found.append(value)

    scan(record)
    return found


_PERSONAL_KEY = re.compile(r'email|name|phone|address|subscriber_attributes|billing_details|shipping', re.IGNORECASE)


def set_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    """Change one setting for the rest of the test (as a redeploy with another parameter would)."""
    monkeypatch.setenv(name, value)
    import atelier.config
    import atelier.payments.service

    atelier.config.get_settings.cache_clear()
    atelier.payments.service.payments_service.cache_clear()
