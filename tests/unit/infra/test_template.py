"""The template deploys what the product needs, the way production needs it."""

from typing import Any

import pytest

from infra.local.template import load_template, resources_of_type, translate


@pytest.fixture(scope='module')
def template() -> dict[str, Any]:
    return load_template()


def test_cfn_lint_reports_no_errors():
    from cfnlint.api import ManualArgs, lint_file

    from infra.local.template import TEMPLATE_PATH

    matches = lint_file(TEMPLATE_PATH, config=ManualArgs(regions=['us-east-1']))
    errors = [str(m) for m in matches if m.rule.id.startswith('E')]
    assert errors == []


def test_it_translates_for_every_stage(template: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv('AWS_DEFAULT_REGION', 'us-east-1')
    for stage in ('local', 'dev', 'prod'):
        cfn = translate({'Stage': stage}, template)
        assert 'AWS::Serverless-2016-10-31' not in str(cfn.get('Transform', ''))
        assert resources_of_type(cfn, 'AWS::StepFunctions::StateMachine')


def test_tables_are_on_demand_recoverable_and_protected_in_prod(template: dict[str, Any]):
    tables = resources_of_type(template, 'AWS::DynamoDB::Table')
    assert set(tables) >= {'LedgerTable', 'TasksTable', 'EventsTable'}
    for table in tables.values():
        props = table['Properties']
        assert props['BillingMode'] == 'PAY_PER_REQUEST'
        assert props['PointInTimeRecoverySpecification'] == {'PointInTimeRecoveryEnabled': True}
        assert props['DeletionProtectionEnabled'] == {'Fn::If': ['IsProd', True, False]}
        assert table['DeletionPolicy'] == 'Retain'


def test_the_media_bucket_is_private_encrypted_and_expires_outputs(template: dict[str, Any]):
    props = template['Resources']['MediaBucket']['Properties']
    assert all(props['PublicAccessBlockConfiguration'].values())
    assert props['BucketEncryption']['ServerSideEncryptionConfiguration']
    rules = {rule['Id']: rule for rule in props['LifecycleConfiguration']['Rules']}
    assert rules['expire-outputs']['ExpirationInDays'] == {'Ref': 'OutputRetentionDays'}
    assert template['Parameters']['OutputRetentionDays']['Default'] == 90


def test_payment_raw_bodies_expire_after_the_retention_parameter(template: dict[str, Any]):
    # Only a payment event's raw body item carries expires_at (atelier.payments.store.TTL_ATTRIBUTE)
    from atelier.config import Settings
    from atelier.payments.store import TTL_ATTRIBUTE

    events = template['Resources']['EventsTable']['Properties']
    assert events['TimeToLiveSpecification'] == {'AttributeName': TTL_ATTRIBUTE, 'Enabled': True}
    tasks = template['Resources']['TasksTable']['Properties']
    assert tasks['TimeToLiveSpecification'] == {'AttributeName': 'ttl', 'Enabled': True}  # its own items', untouched
    parameter = template['Parameters']['RawEventRetentionDays']
    assert (parameter['Type'], parameter['Default'], parameter['MinValue']) == ('Number', 400, 1)
    env = template['Globals']['Function']['Environment']['Variables']
    assert env['RAW_EVENT_RETENTION_DAYS'] == {'Ref': 'RawEventRetentionDays'}
    assert Settings.model_fields['raw_event_retention_days'].default == parameter['Default']


def test_every_queue_with_a_consumer_has_a_dead_letter_queue(template: dict[str, Any]):
    for function in resources_of_type(template, 'AWS::Serverless::Function').values():
        for event in (function['Properties'].get('Events') or {}).values():
            if event['Type'] == 'SQS':
                queue = template['Resources'][event['Properties']['Queue']['Fn::GetAtt'][0]]
                assert 'deadLetterTargetArn' in queue['Properties']['RedrivePolicy']
                assert event['Properties'].get('FunctionResponseTypes') == ['ReportBatchItemFailures']


def test_no_secret_values_in_the_template():
    from infra.local.stack import LOCAL_SECRETS
    from infra.local.template import TEMPLATE_PATH

    text = TEMPLATE_PATH.read_text()
    assert not [value for value in LOCAL_SECRETS.values() if value in text]


def test_functions_name_real_handlers(template: dict[str, Any]):
    from infra.local.template import function_specs

    for spec in function_specs(template).values():
        module_file, attr = spec.handler.rsplit('.', 1)
        source = (spec.code_dir / f'{module_file}.py').read_text()
        assert f'def {attr}(' in source, spec.logical_id
        assert (spec.code_dir / '__init__.py').exists(), spec.logical_id
