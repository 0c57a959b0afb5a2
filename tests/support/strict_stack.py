"""The offline stack on a test copy of the template, in a process of its own: proof that it is as strict as AWS.

``python -m tests.support.strict_stack`` deploys ``template.yaml`` with two changes and prints one JSON document
of what it saw:

- one grant removed: ``ExpireCreditsFunction`` loses every policy that names ``LedgerTable``, so its scheduled
  run must be denied, naming the function, the action and the table;
- a test-only ``SleepyFunction`` (``tests/support/sleepy``, ``Timeout: 1``, ``MemorySize: 128``) behind an SQS
  queue with a dead-letter queue, a one-step state machine that retries ``Lambda.Unknown`` once, and an HTTP
  route, so a handler that overruns its timeout (or its memory) is seen as each caller sees it in AWS.

It runs in its own process because moto's backends and the Lambda hook are per process, and the e2e session
already has its stack up.
"""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

ASL = {
    'StartAt': 'Sleep',
    'States': {
        'Sleep': {
            'Type': 'Task',
            'Resource': 'arn:aws:states:::lambda:invoke',
            'Parameters': {'FunctionName': '${SleepyFunctionArn}', 'Payload': {'sleep': 5}},
            'Retry': [{'ErrorEquals': ['Lambda.Unknown'], 'IntervalSeconds': 1, 'MaxAttempts': 1}],
            'End': True,
        }
    },
}


def strict_template() -> dict[str, Any]:
    from infra.local.template import load_template

    template = copy.deepcopy(load_template())
    resources = template['Resources']
    expire = resources['ExpireCreditsFunction']['Properties']
    expire['Policies'] = [p for p in expire.get('Policies', []) if 'LedgerTable' not in json.dumps(p)]
    resources['SleepyQueue'] = {
        'Type': 'AWS::SQS::Queue',
        'Properties': {
            'VisibilityTimeout': 2,
            'RedrivePolicy': {
                'deadLetterTargetArn': {'Fn::GetAtt': ['SleepyDeadLetterQueue', 'Arn']},
                'maxReceiveCount': 2,
            },
        },
    }
    resources['SleepyDeadLetterQueue'] = {'Type': 'AWS::SQS::Queue', 'Properties': {}}
    resources['SleepyFunction'] = {
        'Type': 'AWS::Serverless::Function',
        'Properties': {
            'CodeUri': 'tests/support/sleepy/',
            'Handler': 'app.lambda_handler',
            'Timeout': 1,
            'MemorySize': 128,
            'Events': {
                'Queue': {
                    'Type': 'SQS',
                    'Properties': {'Queue': {'Fn::GetAtt': ['SleepyQueue', 'Arn']}, 'BatchSize': 1},
                },
                'Api': {
                    'Type': 'HttpApi',
                    'Properties': {'ApiId': {'Ref': 'HttpApi'}, 'Path': '/sleepy', 'Method': 'GET'},
                },
            },
        },
    }
    resources['SleepyStateMachine'] = {
        'Type': 'AWS::Serverless::StateMachine',
        'Properties': {
            'Type': 'STANDARD',
            'Definition': ASL,
            'DefinitionSubstitutions': {'SleepyFunctionArn': {'Fn::GetAtt': ['SleepyFunction', 'Arn']}},
            'Policies': [{'LambdaInvokePolicy': {'FunctionName': {'Ref': 'SleepyFunction'}}}],
        },
    }
    return template


def main() -> int:
    import httpx

    from infra.local.runtime import FunctionError
    from infra.local.server import LocalServer
    from tests.utils import wait_until

    seen: dict[str, Any] = {}
    with LocalServer(port=0, schedule_seconds=1.0, template=strict_template()) as server:
        stack = server.stack
        # 1. The grant removed: the hourly expiry (ticking every second here) is denied on the ledger table.
        denial = wait_until(
            lambda: [d for d in stack.iam.denied() if d.role_name and 'ExpireCredits' in d.role_name], 30
        )
        # The run that was denied ends (and is recorded) a moment after the denial.
        expiry_errors = wait_until(
            lambda: [i.error for i in stack.runtime.invocations if i.function == 'ExpireCreditsFunction' and i.error],
            30,
        )
        seen['denied'] = [
            {'role': d.role_name, 'action': d.action, 'resource': d.resource, 'message': d.message()}
            for d in denial or []
        ]
        seen['ledger_table_arn'] = stack.client('dynamodb').describe_table(TableName=stack.physical_id('LedgerTable'))[
            'Table'
        ]['TableArn']
        seen['expire_errors'] = expiry_errors or []

        # 2. Over the API: a function that overruns is the HTTP API's 503.
        response = httpx.get(f'{server.url}/sleepy', timeout=30)
        seen['api'] = {'status': response.status_code, 'body': response.json()}

        # 3. Invoked directly: Lambda's timeout error; past its memory: Runtime.OutOfMemory.
        for name, event in (('timeout', {'sleep': 5}), ('memory', {'allocate_mb': 300})):
            try:
                stack.invoke('SleepyFunction', event)
                seen[name] = None
            except FunctionError as exc:
                seen[name] = exc.payload

        # 4. From SQS: redelivered after the visibility timeout, then moved to the dead-letter queue.
        sqs = stack.client('sqs')
        queue, dead = stack.physical_id('SleepyQueue'), stack.physical_id('SleepyDeadLetterQueue')
        sqs.send_message(QueueUrl=queue, MessageBody='{"sleep": 5}')
        dead_letters = wait_until(lambda: sqs.receive_message(QueueUrl=dead, WaitTimeSeconds=1).get('Messages'), 40)
        seen['sqs'] = {
            'dead_lettered': bool(dead_letters),
            'attempts': sum(
                1 for i in stack.runtime.invocations if i.function == 'SleepyFunction' and i.source == 'aws:sqs'
            ),
        }

        # 5. From Step Functions: Lambda.Unknown, retried once by the state's Retry, then the execution fails.
        sfn = stack.client('stepfunctions')
        execution = sfn.start_execution(stateMachineArn=stack.physical_id('SleepyStateMachine'))['executionArn']
        described = wait_until(
            lambda: (d := sfn.describe_execution(executionArn=execution))['status'] != 'RUNNING' and d, 40
        )
        history = sfn.get_execution_history(executionArn=execution, maxResults=1000)['events']
        seen['state_machine'] = {
            'status': described and described['status'],
            'error': described and described.get('error'),
            'failed_attempts': sum(1 for e in history if e['type'] in ('LambdaFunctionFailed', 'TaskFailed')),
        }
    json.dump(seen, sys.stdout)
    sys.stdout.write('\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
