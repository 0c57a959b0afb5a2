"""AWS adapters of the task ports: SQS for dispatch, Step Functions for the lifecycle."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError


class SqsDispatchQueue:
    def __init__(self, queue_url: str, *, sqs: Any = None) -> None:
        self.queue_url = queue_url
        self._sqs = sqs

    def send(self, task_id: str, account_id: str) -> None:
        from atelier.aws import client

        sqs = self._sqs or client('sqs')
        sqs.send_message(
            QueueUrl=self.queue_url, MessageBody=json.dumps({'task_id': task_id, 'account_id': account_id})
        )


class StepFunctionsWorkflow:
    def __init__(self, state_machine_arn: str, *, sfn: Any = None) -> None:
        self.state_machine_arn = state_machine_arn
        self._sfn = sfn

    @property
    def sfn(self) -> Any:
        if self._sfn is None:
            from atelier.aws import client

            self._sfn = client('stepfunctions')
        return self._sfn

    def start(self, task_id: str, account_id: str) -> bool:
        try:
            self.sfn.start_execution(
                stateMachineArn=self.state_machine_arn,
                name=task_id,
                input=json.dumps({'task_id': task_id, 'account_id': account_id}),
            )
        except ClientError as exc:
            if exc.response.get('Error', {}).get('Code') == 'ExecutionAlreadyExists':
                return False
            raise
        return True

    def resume(self, token: str) -> bool:
        try:
            self.sfn.send_task_success(taskToken=token, output='{}')
        except ClientError as exc:
            if exc.response.get('Error', {}).get('Code') in {'TaskTimedOut', 'InvalidToken', 'TaskDoesNotExist'}:
                return False
            raise
        return True
