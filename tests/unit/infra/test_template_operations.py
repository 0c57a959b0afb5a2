"""Ops sees failures: logs kept for a set time, API access logs, and an alarm for every job that fails unseen."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.local.template import load_template, resources_of_type

#: The retention values CloudWatch Logs accepts.
CLOUDWATCH_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557]


@pytest.fixture(scope='module')
def template() -> dict[str, Any]:
    return load_template()


def scheduled_functions(template: dict[str, Any]) -> set[str]:
    """Functions a schedule invokes (asynchronously: a failure reaches no caller)."""
    return {
        name
        for name, function in resources_of_type(template, 'AWS::Serverless::Function').items()
        if any(event['Type'] == 'Schedule' for event in (function['Properties'].get('Events') or {}).values())
    }


def alarms_to_ops(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        alarm['Properties']
        for alarm in resources_of_type(template, 'AWS::CloudWatch::Alarm').values()
        if {'Ref': 'OpsAlarmTopic'} in alarm['Properties'].get('AlarmActions', [])
    ]


def test_log_retention_is_a_parameter_with_cloudwatch_values(template: dict[str, Any]):
    parameter = template['Parameters']['LogRetentionDays']
    assert parameter['Default'] == 30
    assert set(CLOUDWATCH_RETENTION_DAYS) <= set(parameter['AllowedValues'])


def test_every_function_logs_to_its_own_group_with_the_retention_parameter(template: dict[str, Any]):
    groups = {
        res['Properties']['LogGroupName'].get('Fn::Sub'): res['Properties']
        for res in resources_of_type(template, 'AWS::Logs::LogGroup').values()
        if isinstance(res['Properties'].get('LogGroupName'), dict)
    }
    for name in resources_of_type(template, 'AWS::Serverless::Function'):
        group = groups.get(f'/aws/lambda/${{{name}}}')
        assert group is not None, f'{name} has no log group'
        assert group['RetentionInDays'] == {'Ref': 'LogRetentionDays'}


def test_the_http_api_writes_json_access_logs(template: dict[str, Any]):
    settings = template['Resources']['HttpApi']['Properties']['AccessLogSettings']
    group = settings['DestinationArn']['Fn::GetAtt'][0]
    assert template['Resources'][group]['Properties']['RetentionInDays'] == {'Ref': 'LogRetentionDays'}
    fields = json.loads(settings['Format'])
    assert {'requestId', 'routeKey', 'status', 'integrationErrorMessage', 'responseLatency'} <= set(fields)
    assert all(value.startswith('$context.') for value in fields.values())


def test_every_scheduled_function_has_an_errors_alarm(template: dict[str, Any]):
    scheduled = scheduled_functions(template)
    assert scheduled >= {'ExpireCreditsFunction', 'ReconcileLedgerFunction', 'SweepTasksFunction'}
    watched = {
        alarm['Dimensions'][0]['Value']['Ref']
        for alarm in alarms_to_ops(template)
        if alarm['Namespace'] == 'AWS/Lambda' and alarm['MetricName'] == 'Errors'
    }
    assert scheduled <= watched


def test_every_scheduled_function_keeps_failed_events_in_a_watched_queue(template: dict[str, Any]):
    watched_queues = {
        alarm['Dimensions'][0]['Value']['Fn::GetAtt'][0]
        for alarm in alarms_to_ops(template)
        if alarm['Namespace'] == 'AWS/SQS'
    }
    functions = resources_of_type(template, 'AWS::Serverless::Function')
    for name in scheduled_functions(template):
        dead_letters = functions[name]['Properties'].get('DeadLetterQueue')
        assert dead_letters is not None and dead_letters['Type'] == 'SQS', f'{name} drops failed events'
        assert dead_letters['TargetArn']['Fn::GetAtt'][0] in watched_queues
