"""Every function's role grants what its code calls, on its own resources, and nothing broader.

The rules are checked on the translated template (what CloudFormation deploys), so a SAM policy template
(``DynamoDBCrudPolicy``, ``SSMParameterReadPolicy`` ...) is judged by the statements it expands to.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.local.template import load_template, resources_of_type, translate

#: The API tokens of the providers with an authenticated API (Replicate, fal, RunPod).
API_TOKENS = frozenset({'provider-api-token-replicate', 'provider-api-token-fal', 'provider-api-token-runpod'})
#: The SSM parameters (under /atelier/<stage>/) each function reads: who calls ``Settings.secret``.
#: ``auth-token-secret``: every authenticated route (atelier.api.auth), sign-in, and the ledger's cursor key
#: (atelier.wiring, derived on first use, so only GET /v1/ledger reads it for that).
EXPECTED_SECRETS: dict[str, frozenset[str]] = {
    'MetaApiFunction': frozenset(),
    'IdentityApiFunction': frozenset({'auth-token-secret'}),
    # Account deletion ends running tasks: like the sweeper, only Replicate's, fal's and RunPod's cancels need a secret.
    'DeleteAccountFunction': API_TOKENS,
    'LedgerApiFunction': frozenset({'auth-token-secret'}),
    'ExpireCreditsFunction': frozenset(),
    'AdjustCreditsFunction': frozenset(),
    'ManageApiKeysFunction': frozenset(),
    'ReconcileLedgerFunction': frozenset(),
    'DispatchTaskFunction': frozenset(),
    # Cog: the webhook URL token is built on submit and on every poll (a PUT); Replicate, fal and RunPod: the API token.
    'SubmitTaskFunction': API_TOKENS | {'provider-webhook-secret-cog'},
    'AwaitProviderFunction': frozenset(),
    'PollTaskFunction': API_TOKENS | {'provider-webhook-secret-cog'},
    'SettleTaskFunction': frozenset(),
    # Release and sweep cancel an expired task's provider job; Replicate's, fal's and RunPod's cancels need their token.
    'ReleaseTaskFunction': API_TOKENS,
    'SweepTasksFunction': API_TOKENS,
    'TasksApiFunction': API_TOKENS | {'auth-token-secret'},
    'CatalogApiFunction': frozenset({'auth-token-secret'}),
    'UploadsApiFunction': frozenset({'auth-token-secret'}),
    # fal webhooks are verified with fal's public keys (no secret); its token fetches the result they announce.
    # RunPod's webhooks are unsigned: its token fetches the job's status, which decides.
    'ProviderWebhookFunction': frozenset(
        {
            'provider-webhook-secret-mock',
            'provider-webhook-secret-cog',
            'provider-webhook-secret-replicate',
            'provider-api-token-fal',
            'provider-api-token-runpod',
        }
    ),
    'PaymentsApiFunction': frozenset({'auth-token-secret', 'stripe-api-key'}),
    'StripeWebhookFunction': frozenset({'stripe-webhook-secret', 'stripe-api-key'}),  # the key: invoice payments
    'RevenueCatWebhookFunction': frozenset({'revenuecat-webhook-auth'}),
    'ReplayPaymentEventFunction': frozenset({'stripe-api-key'}),  # a replayed invoice's payment is looked up
    'BackfillPaymentsFunction': frozenset({'stripe-api-key', 'revenuecat-api-key'}),
}

#: Actions that only a few code paths need. Granting one elsewhere fails, unless it is listed here
#: (function, action) with the code that calls it.
NARROW_ACTIONS = frozenset(
    {
        'dynamodb:Scan',
        'dynamodb:DeleteItem',
        'dynamodb:BatchWriteItem',
        'dynamodb:PartiQLDelete',
        'dynamodb:DeleteTable',
        's3:DeleteObject',
        's3:PutLifecycleConfiguration',
        's3:PutBucketPolicy',
        'ssm:DescribeParameters',
        'ssm:GetParametersByPath',
        'ssm:PutParameter',
        'states:StopExecution',
    }
)
ALLOWED_NARROW_ACTIONS: dict[tuple[str, str], str] = {
    ('ReconcileLedgerFunction', 'dynamodb:Scan'): (
        'atelier/ledger/dynamodb.py DynamoDBLedgerStore.account_ids: the daily run checks every account'
    ),
    ('SubmitTaskFunction', 'dynamodb:DeleteItem'): (
        'atelier/providers/journal.py DynamoDBJournal.release: a Replicate submit that was never sent frees its claim'
    ),
    ('DeleteAccountFunction', 'dynamodb:DeleteItem'): (
        'account deletion: atelier/identity/claims.py AccountClaims.release_all (device and identity items and the '
        "account's listing items of them), atelier/payments/store.py PaymentsTable.delete_raw_bodies (raw bodies)"
    ),
    ('DeleteAccountFunction', 's3:DeleteObject'): (
        "account deletion: atelier/storage/media.py MediaStore.delete_prefix (the account's outputs and uploads)"
    ),
}

#: Managed policies SAM attaches: logs (every function), X-Ray (Tracing: Active), the SQS poller (SQS events).
BASIC_MANAGED = {'AWSLambdaBasicExecutionRole', 'AWSXrayWriteOnlyAccess'}
SQS_POLLER = 'AWSLambdaSQSQueueExecutionRole'

SSM_PARAMETER_PREFIX = 'arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter/atelier/${Stage}/'


@pytest.fixture(scope='module')
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope='module')
def cfn(template: dict[str, Any]) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv('AWS_DEFAULT_REGION', 'us-east-1')
        return translate({'Stage': 'dev'}, template)


@pytest.fixture(scope='module')
def functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(template, 'AWS::Serverless::Function')


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements_of(cfn: dict[str, Any], function: str) -> list[dict[str, Any]]:
    """Every statement of the inline policies on the function's role (SAM's expansions included)."""
    role = cfn['Resources'][f'{function}Role']['Properties']
    return [
        statement
        for policy in role.get('Policies', [])
        for statement in _as_list(policy['PolicyDocument']['Statement'])
    ]


def _resource_text(resource: Any) -> str:
    """A resource as text: ``Fn::Sub`` strings as written, anything else as its JSON."""
    if isinstance(resource, dict) and 'Fn::Sub' in resource and isinstance(resource['Fn::Sub'], str):
        return str(resource['Fn::Sub'])
    return resource if isinstance(resource, str) else json.dumps(resource, sort_keys=True)


def grants(cfn: dict[str, Any], function: str) -> list[tuple[str, str]]:
    """(action, resource) pairs the function's role allows."""
    pairs = []
    for statement in statements_of(cfn, function):
        assert statement['Effect'] == 'Allow', (function, statement)
        assert 'NotAction' not in statement and 'NotResource' not in statement, (function, statement)
        for action in _as_list(statement['Action']):
            for resource in _as_list(statement['Resource']):
                pairs.append((action, _resource_text(resource)))
    return pairs


def test_every_function_has_an_expected_secret_map(functions: dict[str, dict[str, Any]]):
    assert set(functions) == set(EXPECTED_SECRETS)


def test_functions_use_explicit_statements_not_sam_policy_templates(functions: dict[str, dict[str, Any]]):
    # A SAM policy template grants a fixed set (DynamoDBCrudPolicy: Scan, DeleteItem, BatchWriteItem ...),
    # broader than any of these functions' code.
    for name, function in functions.items():
        for policy in function['Properties'].get('Policies', []):
            assert isinstance(policy, dict) and 'Statement' in policy, f'{name}: {policy} is not a policy document'


def test_no_action_is_a_wildcard_and_no_resource_is_everything(cfn: dict[str, Any]):
    for name in EXPECTED_SECRETS:
        for action, resource in grants(cfn, name):
            assert '*' not in action, f'{name} is granted {action}'
            assert resource != '*', f'{name} is granted {action} on every resource'


def test_narrow_actions_are_granted_only_where_the_code_calls_them(cfn: dict[str, Any]):
    for name in EXPECTED_SECRETS:
        for action, _ in grants(cfn, name):
            if action in NARROW_ACTIONS:
                assert (name, action) in ALLOWED_NARROW_ACTIONS, f'{name} is granted {action}; its code never calls it'


def test_each_function_reads_exactly_its_own_secrets_by_full_name(cfn: dict[str, Any]):
    for name, expected in EXPECTED_SECRETS.items():
        parameters = set()
        for action, resource in grants(cfn, name):
            if not action.startswith('ssm:'):
                continue
            assert action == 'ssm:GetParameter', f'{name} is granted {action}'
            assert resource.startswith(SSM_PARAMETER_PREFIX), f'{name}: {resource} is not a parameter of the stage'
            parameter = resource.removeprefix(SSM_PARAMETER_PREFIX)
            assert parameter and '*' not in parameter and '?' not in parameter, f'{name}: {resource} is a wildcard'
            parameters.add(parameter)
        assert parameters <= expected, f'{name} may read {sorted(parameters - expected)} it does not use'
        assert parameters == expected, f'{name} cannot read {sorted(expected - parameters)} that its code reads'


def test_dynamodb_grants_name_a_table_or_one_of_its_indexes(cfn: dict[str, Any]):
    tables = set(resources_of_type(cfn, 'AWS::DynamoDB::Table'))
    for name in EXPECTED_SECRETS:
        for action, resource in grants(cfn, name):
            if not action.startswith('dynamodb:'):
                continue
            table = next((t for t in tables if t in resource), None)
            assert table is not None, f'{name}: {action} on {resource}'
            if '/index/' in resource:
                assert action == 'dynamodb:Query', f'{name}: {action} on an index'
                assert not resource.endswith('/index/*'), f'{name}: {action} on every index of {table}'


def test_s3_grants_name_a_prefix_of_the_media_bucket(cfn: dict[str, Any]):
    for name in EXPECTED_SECRETS:
        for action, resource in grants(cfn, name):
            if not action.startswith('s3:'):
                continue
            if action == 's3:ListBucket':
                assert resource == json.dumps({'Fn::GetAtt': ['MediaBucket', 'Arn']}), (name, resource)
                continue
            assert resource in {'${MediaBucket.Arn}/uploads/*', '${MediaBucket.Arn}/outputs/*'}, (name, resource)


def test_roles_carry_only_the_managed_policies_sam_adds(cfn: dict[str, Any], functions: dict[str, dict[str, Any]]):
    for name, function in functions.items():
        arns = cfn['Resources'][f'{name}Role']['Properties'].get('ManagedPolicyArns', [])
        managed = {str(arn).rsplit('/', 1)[-1] for arn in arns}
        allowed = set(BASIC_MANAGED)
        if any(event['Type'] == 'SQS' for event in (function['Properties'].get('Events') or {}).values()):
            allowed.add(SQS_POLLER)
        assert managed <= allowed, f'{name} has managed policies {sorted(managed - allowed)}'
