"""The composition root reads no secret while wiring: each function reads only the secrets of what it runs.

The ledger jobs (expire, adjust, reconcile) and the payment functions must work with no token secret at all,
since their roles cannot read it (template.yaml); only a second page of ``GET /v1/ledger`` needs the cursor key.
"""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from atelier.ledger import LotKind, utc_now
from infra.local.template import table_definitions

STAGE = 'test'
LEDGER_TABLE = 'atelier-test-ledger'


def _clear_caches() -> None:
    import atelier.aws
    import atelier.config
    import atelier.payments.service
    import atelier.tasks.wiring
    import atelier.wiring

    atelier.config.get_settings.cache_clear()
    atelier.config.clear_secrets()
    atelier.aws.client.cache_clear()
    atelier.wiring.reset()
    atelier.payments.service.payments_service.cache_clear()
    atelier.tasks.wiring.task_service.cache_clear()
    atelier.tasks.wiring.media.cache_clear()


@pytest.fixture
def secrets_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The SSM parameter names read, in order (the value of each is a fixed test secret)."""
    import atelier.config

    for name, value in {
        'STAGE': STAGE,
        'LEDGER_TABLE': LEDGER_TABLE,
        'TASKS_TABLE': 'atelier-test-tasks',
        'EVENTS_TABLE': 'atelier-test-events',
        'MEDIA_BUCKET': 'atelier-test-media',
        'TASK_QUEUE_URL': 'https://sqs.us-east-1.amazonaws.com/123456789012/atelier-test-tasks',
        'TASK_STATE_MACHINE_ARN': 'arn:aws:states:us-east-1:123456789012:stateMachine:atelier-test-tasks',
        'SECRETS_PREFIX': f'/atelier/{STAGE}/',
        'MOCK_PROVIDER_URL': 'http://127.0.0.1:9',
        'COG_PROVIDER_URL': 'http://127.0.0.1:9',
        'REPLICATE_ENABLED': 'true',
        'AWS_DEFAULT_REGION': 'us-east-1',
        'AWS_ACCESS_KEY_ID': 'testing',
        'AWS_SECRET_ACCESS_KEY': 'testing',
    }.items():
        monkeypatch.setenv(name, value)
    read: list[str] = []

    def fetch(parameter_name: str) -> str:
        read.append(parameter_name)
        return 'test-token-secret-of-at-least-32-characters'

    _clear_caches()
    monkeypatch.setattr(atelier.config, '_fetch_secret', fetch)  # the real one (and its cache) is never called
    with mock_aws():
        ledger_table = table_definitions()['LedgerTable']
        boto3.client('dynamodb').create_table(**{**ledger_table, 'TableName': LEDGER_TABLE})
        yield read
    _clear_caches()


def test_the_ledger_jobs_read_no_secret(secrets_read: list[str]):
    from atelier.wiring import ledger

    # Given an account with credit, through the ledger the handlers use
    ledger().open_account('acct_1')
    ledger().grant('acct_1', amount=5, kind=LotKind.PAID, business_id='pack:1')
    # When the ledger jobs run: adjust, expire, reconcile (and a listing that fits one page)
    ledger().adjust('acct_1', amount=2, business_id='adjust:1', reason='goodwill', actor='ops')
    ledger().expire(utc_now())
    assert ledger().reconcile('acct_1').ok
    assert list(ledger().account_ids()) == ['acct_1']
    assert ledger().list_entries('acct_1').next_cursor is None
    # Then no secret was read
    assert secrets_read == []


def test_a_second_ledger_page_signs_its_cursor_with_a_key_from_the_token_secret(secrets_read: list[str]):
    from atelier.wiring import ledger

    # Given an account with two entries
    ledger().open_account('acct_1')
    for n in range(2):
        ledger().grant('acct_1', amount=1, kind=LotKind.PAID, business_id=f'pack:{n}')
    assert secrets_read == []
    # When the ledger API lists them one at a time
    first = ledger().list_entries('acct_1', limit=1)
    second = ledger().list_entries('acct_1', limit=1, cursor=first.next_cursor)
    # Then the cursor key came from the token secret, read once
    assert secrets_read == [f'/atelier/{STAGE}/auth-token-secret']
    assert [e.id for e in first.items + second.items] == ['pack:1', 'pack:0']


def test_wiring_the_payments_and_task_services_reads_no_secret(secrets_read: list[str]):
    from atelier.config import get_settings
    from atelier.payments.service import payments_service
    from atelier.tasks.wiring import task_service

    # When the payment and task functions build their services (and the task service its providers)
    payments_service(get_settings()).packs()
    service = task_service()
    for name in ('mock', 'cog', 'replicate'):
        service.providers.get(name)
    # Then no secret is read until an operation needs one
    assert secrets_read == []


def test_wiring_the_account_deletion_reads_no_secret(secrets_read: list[str]):
    from atelier.wiring import account_purge, api_keys, deletion_marks, deletion_queue

    # When the identity API and the purge build the deletion (the purge: the task service and its providers)
    deletion_queue(), deletion_marks(), api_keys()
    purge = account_purge()
    assert purge.api_keys.revoke_all('acct_1', 'account_deleted') == 0  # the API key hook, no store yet
    # Then no secret is read: the purge's role may read only the Replicate token, for a cancel that needs it
    assert secrets_read == []
