"""The async plumbing of the real template works offline: queue -> consumer, state machine -> handlers."""

import json
import uuid

from tests.e2e.conftest import Stack
from tests.utils import wait_until


def _wait(predicate, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    found = wait_until(predicate, timeout)
    assert found, 'timed out'
    return found


def test_a_message_on_the_template_queue_reaches_its_consumer_through_the_event_source_mapping(stack: Stack):
    # Given the template's task queue and the function its event source mapping names
    mappings = stack.client('lambda').list_event_source_mappings()['EventSourceMappings']
    queue_arn = stack.client('sqs').get_queue_attributes(
        QueueUrl=stack.physical_id('TaskQueue'), AttributeNames=['QueueArn']
    )['Attributes']['QueueArn']
    consumer = next(m['FunctionArn'] for m in mappings if m['EventSourceArn'] == queue_arn)
    # When a message is sent to the queue
    message_id = stack.client('sqs').send_message(
        QueueUrl=stack.physical_id('TaskQueue'), MessageBody=json.dumps({'task_id': f'plumbing-{uuid.uuid4().hex}'})
    )['MessageId']
    # Then the consumer's handler ran on it, in-process, as an SQS batch
    invocation = _wait(lambda: next((i for i in stack.invocations if message_id in i.message_ids), None))
    assert invocation.source == 'aws:sqs'
    assert stack.physical_id(invocation.function) == consumer.split(':function:')[-1]


def test_an_execution_of_the_template_state_machine_runs_its_task_states_in_process(stack: Stack):
    # Given the template's state machine
    sfn = stack.client('stepfunctions')
    definition = json.loads(
        sfn.describe_state_machine(stateMachineArn=stack.physical_id('TaskStateMachine'))['definition']
    )
    assert any(state['Type'] == 'Task' for state in definition['States'].values())
    before = len(stack.invocations)
    # When an execution starts (for a task that does not exist)
    execution = sfn.start_execution(
        stateMachineArn=stack.physical_id('TaskStateMachine'),
        name=f'plumbing-{uuid.uuid4().hex}',
        input=json.dumps({'task_id': f'missing-{uuid.uuid4().hex}'}),
    )
    # Then it reaches a final state, and its Task states ran the template's handlers in this process
    status = _wait(
        lambda: (s := sfn.describe_execution(executionArn=execution['executionArn'])['status']) != 'RUNNING' and s,
        timeout=30,
    )
    assert status in {'SUCCEEDED', 'FAILED'}
    history = sfn.get_execution_history(executionArn=execution['executionArn'])['events']
    assert any(e['type'] == 'TaskStateEntered' for e in history)
    ran = {i.function for i in stack.invocations[before:] if i.source == 'invoke'}
    assert ran, 'no handler ran for the execution'
