"""The offline stack is as strict as AWS: own process, own environment, own role, own timeout per function."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import botocore.exceptions
import httpx
import pytest

from infra.local.template import ROOT
from tests.e2e.conftest import Stack

LAMBDA_RESERVED = {
    'PATH',
    'LANG',
    'TZ',
    'PYTHONUNBUFFERED',
    'LAMBDA_TASK_ROOT',
    '_HANDLER',
    'AWS_EXECUTION_ENV',
    'AWS_LAMBDA_FUNCTION_NAME',
    'AWS_LAMBDA_FUNCTION_VERSION',
    'AWS_LAMBDA_FUNCTION_MEMORY_SIZE',
    'AWS_LAMBDA_LOG_GROUP_NAME',
    'AWS_LAMBDA_LOG_STREAM_NAME',
    'AWS_REGION',
    'AWS_DEFAULT_REGION',
    'AWS_ACCESS_KEY_ID',
    'AWS_SECRET_ACCESS_KEY',
    'AWS_SESSION_TOKEN',
    'AWS_ENDPOINT_URL',
}


def _environ_of(pid: int) -> dict[str, str]:
    raw = Path(f'/proc/{pid}/environ').read_bytes()
    return dict(item.split('=', 1) for item in raw.decode().split('\0') if '=' in item)


def _invoke(stack: Stack, logical_id: str, event: dict[str, Any]) -> Any:
    return stack.invoke(logical_id, event)


def test_each_function_runs_in_its_own_process_with_only_its_own_environment(stack: Stack) -> None:
    # Given two functions the API has just run
    stack.http.get('/health').raise_for_status()
    assert stack.http.get('/v1/me').status_code == 401  # IdentityApi answers 401 without a token, after a cold start
    runtime = stack.server.stack.runtime
    meta = runtime._pools[runtime.by_logical_id('MetaApiFunction').name].all  # type: ignore[attr-defined]
    identity = runtime._pools[runtime.by_logical_id('IdentityApiFunction').name].all  # type: ignore[attr-defined]
    meta_pids = {e.process.pid for e in meta}
    identity_pids = {e.process.pid for e in identity}
    # Then each runs in processes of its own, none of them this test's process
    assert meta_pids and identity_pids and not meta_pids & identity_pids
    import os

    assert os.getpid() not in meta_pids | identity_pids
    # And each process sees exactly the template's variables for that function, Lambda's own, and its role
    for logical_id, pids in (('MetaApiFunction', meta_pids), ('IdentityApiFunction', identity_pids)):
        function = runtime.by_logical_id(logical_id)
        environ = _environ_of(next(iter(pids)))
        assert set(environ) == LAMBDA_RESERVED | set(function.environment), logical_id
        assert environ['AWS_LAMBDA_FUNCTION_NAME'] == function.name
        assert environ['AWS_ACCESS_KEY_ID'].startswith('ASIA')  # an assumed-role session, not the admin's key
        assert environ['AWS_ACCESS_KEY_ID'] != stack.server.stack.admin['AWS_ACCESS_KEY_ID']


def test_a_new_environment_is_a_cold_start_with_its_init_duration_and_then_stays_warm(stack: Stack) -> None:
    # Given the meta function's environments retired
    runtime = stack.server.stack.runtime
    deadline = time.monotonic() + 10
    while runtime.warm_environments('MetaApiFunction') and time.monotonic() < deadline:  # type: ignore[attr-defined]
        runtime.retire('MetaApiFunction')  # type: ignore[attr-defined]  # busy ones are retired once idle
        time.sleep(0.05)
    before = len(runtime.invocations)
    # When /health is called three times in a row
    for _ in range(3):
        stack.http.get('/health').raise_for_status()
    # Then the first invocation reported an init duration and the later ones reused the warm environment
    # (other traffic may reach the $default route meanwhile: the first invocation is cold whoever made it)
    meta = [i for i in runtime.invocations[before:] if i.function == 'MetaApiFunction']
    assert len(meta) >= 3
    assert meta[0].init_ms is not None and meta[0].init_ms > 0, meta
    assert any(i.init_ms is None for i in meta[1:]), meta


@pytest.mark.access_denied_expected
def test_the_meta_function_role_cannot_read_the_stripe_key(stack: Stack) -> None:
    # Given the credentials of MetaApiFunction's own role, as Lambda hands them to it
    ssm = stack.server.stack.client_as(stack.server.stack.role_of('MetaApiFunction'), 'ssm')
    # When it asks for the Stripe API key
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        ssm.get_parameter(Name='/atelier/local/stripe-api-key', WithDecryption=True)
    # Then AWS's AccessDeniedException names the role, the action and the parameter
    error = denied.value.response['Error']
    assert error['Code'] == 'AccessDeniedException'
    assert 'assumed-role/' in error['Message'] and 'MetaApiFunctionRole' in error['Message']
    assert 'ssm:GetParameter' in error['Message']
    assert 'parameter/atelier/local/stripe-api-key' in error['Message']


@pytest.mark.access_denied_expected
def test_a_lambda_role_cannot_be_assumed_by_a_user_and_unknown_keys_are_refused(stack: Stack) -> None:
    # A function's role trusts only the Lambda service: the administrator cannot assume it (no 500)
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        stack.client('sts').assume_role(
            RoleArn=stack.server.stack.role_of('MetaApiFunction'), RoleSessionName='ops-session'
        )
    assert denied.value.response['Error']['Code'] == 'AccessDenied'
    # And a made-up key is refused outright
    import boto3

    forged = boto3.client(
        'dynamodb',
        endpoint_url=stack.server.stack.endpoint,
        region_name='us-east-1',
        aws_access_key_id='AKIAFORGEDFORGEDFORG',
        aws_secret_access_key='forged',
    )
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        forged.list_tables()
    assert refused.value.response['Error']['Code'] == 'UnrecognizedClientException' or 'InvalidClientTokenId' in str(
        refused.value
    )


def test_the_four_ledger_jobs_run_under_their_own_roles_through_the_lambda_api(stack: Stack) -> None:
    # Given an account with credits (ops adjust them through AdjustCreditsFunction, invoked via the Lambda API)
    user = stack.sign_in()
    adjusted = stack.adjust(user.account_id, 25)
    assert adjusted['balance'] == {'available': 25, 'held': 0}
    # When ops run the expiry, the reconcile and the Stripe backfill the way the console "Test" button does
    expired = _invoke(stack, 'ExpireCreditsFunction', {})
    reconciled = _invoke(stack, 'ReconcileLedgerFunction', {'account_ids': [user.account_id]})
    backfilled = _invoke(stack, 'BackfillPaymentsFunction', {'stripe': {'undelivered_only': True}})
    # Then each succeeded as its own role (the autouse IAM check fails the test on any denial)
    assert expired['lots'] >= 0
    assert reconciled == {'checked': 1, 'mismatched': []}
    assert 'stripe' in backfilled
    assert user.get('/v1/me').json()['balance']['available'] == 25


def test_the_scheduled_jobs_run_on_their_schedules_without_errors(stack: Stack) -> None:
    # Given the stack's schedules tick every 2 s offline
    runtime = stack.server.stack.runtime
    scheduled = {'ExpireCreditsFunction', 'ReconcileLedgerFunction', 'BackfillPaymentsFunction', 'SweepTasksFunction'}
    deadline = time.monotonic() + 20
    ran: dict[str, list[Any]] = {}
    while time.monotonic() < deadline and set(ran) != scheduled:
        ran = {}
        for invocation in list(runtime.invocations):
            if invocation.source == 'schedule' and invocation.function in scheduled:
                ran.setdefault(invocation.function, []).append(invocation)
        time.sleep(0.5)
    # Then every scheduled function ran, and none of its runs failed
    assert set(ran) == scheduled
    failures = [(name, i.error) for name, runs in ran.items() for i in runs if i.error]
    assert not failures


def test_two_hundred_concurrent_connections_all_get_an_http_answer(stack: Stack) -> None:
    # Given 200 clients, each on its own connection, released at once
    barrier = Barrier(200)

    def call(n: int) -> int:
        with httpx.Client(base_url=stack.url, timeout=120) as client:
            barrier.wait()
            path = '/health' if n % 2 else '/v1/me'
            return client.get(path).status_code

    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(call, range(200)))
    # Then every one of them got an answer: no reset, no stall, no server error
    assert len(statuses) == 200
    assert all(status in (200, 401, 429) for status in statuses), sorted(set(statuses))


def test_an_unsupported_method_is_a_json_405(stack: Stack) -> None:
    for method in ('TRACE', 'QUERY'):
        response = stack.http.request(method, '/health')
        assert response.status_code == 405, (method, response.text)
        assert response.json()['error']['code'] == 'method_not_allowed'
        assert 'GET' in response.headers['allow']


@pytest.fixture(scope='module')
def strict() -> dict[str, Any]:
    """A second offline stack, on a test copy of the template, in its own process (tests/support/strict_stack.py)."""
    completed = subprocess.run(
        [sys.executable, '-m', 'tests.support.strict_stack'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in __import__('os').environ.items() if k not in ('AWS_ENDPOINT_URL', 'MOTO_PORT')},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_removing_one_grant_is_denied_and_the_denial_names_function_action_and_resource(
    strict: dict[str, Any],
) -> None:
    # Given ExpireCreditsFunction without its grants on the ledger table, when its schedule runs it
    denied = strict['denied']
    # Then the call is denied, and the denial names the function's role, the action and the table
    assert denied, strict
    first = denied[0]
    assert 'ExpireCreditsFunction' in first['role']
    assert first['action'].startswith('dynamodb:')
    assert first['resource'].startswith(strict['ledger_table_arn'])
    assert 'is not authorized to perform: dynamodb:' in first['message']
    # And the function failed, as it would in AWS
    assert any('AccessDenied' in error for error in strict['expire_errors'])


def test_a_handler_past_its_timeout_is_reported_as_lambda_reports_it(strict: dict[str, Any]) -> None:
    timeout = strict['timeout']
    assert timeout is not None and 'errorType' not in timeout
    assert timeout['errorMessage'].endswith('Task timed out after 1.00 seconds')
    assert strict['memory']['errorType'] == 'Runtime.OutOfMemory'
    # Over the HTTP API, the integration's 503
    assert strict['api'] == {'status': 503, 'body': {'message': 'Service Unavailable'}}


def test_a_timed_out_sqs_message_is_redelivered_then_dead_lettered(strict: dict[str, Any]) -> None:
    assert strict['sqs']['attempts'] >= 2
    assert strict['sqs']['dead_lettered'] is True


def test_a_timed_out_state_machine_step_is_lambda_unknown_and_retried(strict: dict[str, Any]) -> None:
    machine = strict['state_machine']
    assert machine['status'] == 'FAILED'
    assert machine['error'] == 'Lambda.Unknown'
    assert machine['failed_attempts'] == 2  # the first try and the one Retry
