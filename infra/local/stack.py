"""The offline stack: ``template.yaml`` deployed into moto in this process, on 127.0.0.1.

Start-up, in order:
1. moto runs as a threaded server on 127.0.0.1 (a free port), with Docker-free Lambda and real
   state-machine execution (LocalStack's ASL interpreter, which ships in moto).
2. IAM is enforced on that endpoint (:mod:`infra.local.iam`): the stack itself deploys as an administrator
   user, and every function, the state machine and the SQS pollers call AWS as their own roles.
   Every Lambda ``Invoke`` that reaches moto runs the template's handler in an execution environment of
   that function's own (a worker process with its environment, credentials, timeout and memory:
   :mod:`infra.local.runtime`).
3. The template is translated by aws-sam-translator and deployed through moto's CloudFormation:
   tables, queues and their DLQs, event source mappings, the bucket, the state machine, rules.
4. SQS event source mappings are served by pollers that behave like Lambda's: long-poll, batch,
   delete what succeeded, leave failures for the visibility timeout, so redrive to the DLQ works.
   Schedules (``Schedule`` events) are run by a ticker, faster than in the cloud.
5. The HTTP gateway (:mod:`infra.local.gateway`) serves the template's HttpApi routes.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import re
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.local.iam import ACCOUNT_ID, Enforcement, state_machine_clients
from infra.local.runtime import FunctionError, InProcessRuntime, ProcessRuntime, Runtime
from infra.local.template import (
    ARTIFACT_BUCKET,
    ROOT,
    function_specs,
    layer_paths,
    load_template,
    mount_code,
    translate,
)

REGION = 'us-east-1'
STACK_NAME = 'atelier-local'

#: Local secrets: fixed, documented defaults so that local clients can sign webhooks (README).
LOCAL_SECRETS: dict[str, str] = {
    'auth-token-secret': 'atelier-local-token-secret',
    'stripe-webhook-secret': 'whsec_atelier_local',
    'stripe-api-key': 'sk_test_atelier_local',
    'revenuecat-webhook-auth': 'rc_atelier_local',
    'revenuecat-api-key': 'rc_api_atelier_local',
    'provider-webhook-secret-mock': 'mock_atelier_local',
    'provider-webhook-secret-cog': 'cog_atelier_local',
    'provider-webhook-secret-replicate': 'whsec_cmVwbGljYXRlX2F0ZWxpZXJfbG9jYWw=',
    'provider-api-token-replicate': 'r8_atelier_local',
    'provider-api-token-fal': 'fal_atelier_local',
    'provider-api-token-runpod': 'runpod_atelier_local',
}

#: Resource types moto's CloudFormation does not deploy and the offline stack can do without.
SKIPPED_OFFLINE = ('AWS::S3::BucketPolicy', 'AWS::CloudWatch::Alarm')

_REGION_ENVIRONMENT = {'AWS_DEFAULT_REGION': REGION, 'AWS_REGION': REGION}


@dataclass
class EventSourcePoller:
    """Lambda's SQS poller for one event source mapping."""

    queue_url: str
    function_name: str
    role_arn: str
    batch_size: int
    report_batch_item_failures: bool
    stop: threading.Event = field(default_factory=threading.Event)


class OfflineStack:
    """The whole template running offline. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        stage: str = 'local',
        parameters: dict[str, str] | None = None,
        schedule_seconds: float = 5.0,
        environment: dict[str, str] | None = None,
        template: dict[str, Any] | None = None,
        isolation: bool = True,
        max_environments: int = 4,
    ) -> None:
        """``environment`` is added to every function's own (like ``Globals``); ``template`` replaces
        ``template.yaml`` (tests that change a grant); ``isolation=False`` runs every handler in this process
        with the administrator's credentials, only for the lifecycle cost bench, which counts SDK calls here."""
        self.stage = stage
        self.parameters = {'Stage': stage, **(parameters or {})}
        self.schedule_seconds = schedule_seconds
        self.template = template or load_template()
        self.iam = Enforcement(REGION)
        specs = function_specs(self.template)
        self.runtime: Runtime = (
            ProcessRuntime(
                specs,
                region=REGION,
                layer_paths=layer_paths(self.template),
                endpoint=lambda: self.endpoint,
                credentials=self.iam.role_credentials,
                extra_environment=environment,
                max_environments=max_environments,
            )
            if isolation
            else InProcessRuntime(specs)
        )
        self.admin: dict[str, str] = {}
        self.resources: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.endpoint = ''
        self._server: Any = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._schedules = threading.Lock()  # held by each scheduled run, and by paused_schedules()
        self._saved_environ: dict[str, str | None] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> OfflineStack:
        if isinstance(self.runtime, InProcessRuntime):
            mount_code(self.template)
        self._start_moto()
        self._seed_secrets()
        self._upload_artifacts()
        self._deploy()
        self._start_pollers()
        self._start_schedules()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self.runtime.close()
        self.iam.disable()
        if self._server is not None:
            self._server.stop()
            self._server = None
        for key, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __enter__(self) -> OfflineStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ accessors
    def client(self, service: str, **kwargs: Any) -> Any:
        """A client of the offline endpoint, signed as the administrator."""
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION, **kwargs)

    def client_as(self, role_arn: str, service: str, **kwargs: Any) -> Any:
        """A client signed with ``role_arn``'s credentials, as the service that assumes that role calls AWS."""
        import boto3

        keys = self.iam.role_credentials(role_arn)
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=keys['AWS_ACCESS_KEY_ID'],
            aws_secret_access_key=keys['AWS_SECRET_ACCESS_KEY'],
            aws_session_token=keys['AWS_SESSION_TOKEN'],
            **kwargs,
        )

    def role_of(self, logical_id: str) -> str:
        """The ARN of the execution role of function ``logical_id``."""
        return self.runtime.by_logical_id(logical_id).role_arn

    def physical_id(self, logical_id: str) -> str:
        return self.resources[logical_id]

    def invoke(self, logical_id: str, event: Any) -> Any:
        """Invoke a function by its template name through moto's Lambda API, as the console would."""
        from botocore.config import Config

        lambda_ = self.client('lambda', config=Config(read_timeout=960, retries={'total_max_attempts': 1}))
        response = lambda_.invoke(FunctionName=self.physical_id(logical_id), Payload=json.dumps(event).encode())
        payload = json.loads(response['Payload'].read() or b'null')
        if response.get('FunctionError'):
            raise FunctionError(payload)
        return payload

    # ------------------------------------------------------------------ steps
    def _setenv(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            self._saved_environ.setdefault(key, os.environ.get(key))
            os.environ[key] = value

    def _start_moto(self) -> None:
        from moto.awslambda_simple.models import LambdaSimpleBackend
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        # moto's CloudFormation skips these (nothing enforces or evaluates them offline); skip them quietly.
        for resource_type in SKIPPED_OFFLINE:
            warnings.filterwarnings('ignore', message=f'.*{resource_type}.*')
        logging.getLogger('moto').addFilter(lambda r: not any(t in r.getMessage() for t in SKIPPED_OFFLINE))
        logging.getLogger('werkzeug').setLevel(logging.ERROR)
        default_user_config['lambda'] = {'use_docker': False}
        default_user_config['stepfunctions'] = {'execute_state_machine': True}
        _deploy_state_machines_to_the_executing_backend()
        _serialize_dynamodb()

        runtime = self.runtime

        def invoke(
            backend: Any, function_name: str, qualifier: str | None, body: Any, headers: Any, response_headers: Any
        ) -> bytes:
            backend.get_function(function_name, qualifier)  # ResourceNotFound for unknown functions
            return runtime.invoke_bytes(function_name, body, response_headers)

        LambdaSimpleBackend.invoke = invoke  # type: ignore[method-assign,assignment]
        # The roles SAM makes attach AWS managed policies (basic execution, the SQS poller's): load them.
        self._setenv({'MOTO_IAM_LOAD_MANAGED_POLICIES': 'true'})
        self.iam.install()
        state_machine_clients(self.iam.role_credentials)

        self._server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f'http://{host}:{port}'
        # This process (the stack, the tests, ops) is the administrator; everything else is its own role.
        self.admin = self.iam.admin_credentials()
        self.iam.enable()
        # MOTO_PORT lets the ASL interpreter's Task states call back into this server.
        self._setenv({**_REGION_ENVIRONMENT, **self.admin, 'AWS_ENDPOINT_URL': self.endpoint, 'MOTO_PORT': str(port)})
        os.environ.pop('AWS_SESSION_TOKEN', None)

    def _seed_secrets(self) -> None:
        ssm = self.client('ssm')
        for name, value in LOCAL_SECRETS.items():
            ssm.put_parameter(Name=f'/atelier/{self.stage}/{name}', Value=value, Type='SecureString', Overwrite=True)

    def _upload_artifacts(self) -> None:
        s3 = self.client('s3')
        s3.create_bucket(Bucket=ARTIFACT_BUCKET)
        for name, resource in self.template['Resources'].items():
            props = resource.get('Properties', {})
            code = props.get('CodeUri') or props.get('ContentUri')
            if resource['Type'] in {'AWS::Serverless::Function', 'AWS::Serverless::LayerVersion'}:
                s3.put_object(Bucket=ARTIFACT_BUCKET, Key=f'{name}.zip', Body=_zip_dir(ROOT / code))

    def _deploy(self) -> None:
        cfn = translate(self.parameters, self.template)
        cloudformation = self.client('cloudformation')
        cloudformation.create_stack(
            StackName=STACK_NAME,
            TemplateBody=json.dumps(cfn),
            Parameters=[{'ParameterKey': k, 'ParameterValue': v} for k, v in self.parameters.items()],
            Capabilities=['CAPABILITY_IAM', 'CAPABILITY_AUTO_EXPAND'],
        )
        stack = cloudformation.describe_stacks(StackName=STACK_NAME)['Stacks'][0]
        if stack['StackStatus'] != 'CREATE_COMPLETE':
            raise RuntimeError(f'offline deploy failed: {stack["StackStatus"]} {stack.get("StackStatusReason")}')
        self.outputs = {o['OutputKey']: o['OutputValue'] for o in stack.get('Outputs', [])}
        for resource in cloudformation.describe_stack_resources(StackName=STACK_NAME)['StackResources']:
            if resource.get('LogicalResourceId') and resource.get('PhysicalResourceId'):
                self.resources[resource['LogicalResourceId']] = resource['PhysicalResourceId']
        self._attach_managed_policies(cfn)

        lambda_ = self.client('lambda')
        for logical_id in self.runtime.specs:
            configuration = lambda_.get_function(FunctionName=self.resources[logical_id])['Configuration']
            function = self.runtime.register(logical_id, configuration)
            if isinstance(self.runtime, InProcessRuntime):
                self._setenv(dict(function.environment))  # the bench's handlers all read this process's environment

    def _attach_managed_policies(self, cfn: dict[str, Any]) -> None:
        """moto's CloudFormation creates roles without their ``ManagedPolicyArns`` (SAM attaches the basic
        execution role, X-Ray and the SQS poller's policy that way): attach them as CloudFormation would."""
        iam = self.client('iam')
        for logical_id, resource in cfn['Resources'].items():
            if resource['Type'] != 'AWS::IAM::Role' or logical_id not in self.resources:
                continue
            for arn in resource['Properties'].get('ManagedPolicyArns') or []:
                if isinstance(arn, dict) and 'Fn::Sub' in arn:
                    arn = str(arn['Fn::Sub']).replace('${AWS::Partition}', 'aws')
                iam.attach_role_policy(RoleName=self.resources[logical_id], PolicyArn=str(arn))

    def _start_pollers(self) -> None:
        from moto.sqs.models import sqs_backends

        lambda_ = self.client('lambda')
        sqs = self.client('sqs')
        for mapping in lambda_.list_event_source_mappings()['EventSourceMappings']:
            queue_name = mapping['EventSourceArn'].rsplit(':', 1)[-1]
            # moto would run the consumer inside SendMessage; Lambda polls instead, and so do we.
            sqs_backends[ACCOUNT_ID][REGION].queues[queue_name].lambda_event_source_mappings.clear()
            poller = EventSourcePoller(
                queue_url=sqs.get_queue_url(QueueName=queue_name)['QueueUrl'],
                function_name=mapping['FunctionArn'],
                role_arn=self.runtime.function(mapping['FunctionArn']).role_arn,
                batch_size=int(mapping.get('BatchSize', 10)),
                report_batch_item_failures='ReportBatchItemFailures' in mapping.get('FunctionResponseTypes', []),
            )
            self._spawn(f'sqs-{queue_name}', lambda p=poller: self._poll(p))

    def _poll(self, poller: EventSourcePoller) -> None:
        # Lambda's poller reads, deletes and inspects the queue with the function's own role.
        sqs = self.client_as(poller.role_arn, 'sqs')
        while not self._stopping.is_set():
            messages = sqs.receive_message(
                QueueUrl=poller.queue_url,
                MaxNumberOfMessages=poller.batch_size,
                WaitTimeSeconds=1,
                AttributeNames=['All'],
                MessageAttributeNames=['All'],
            ).get('Messages', [])
            if not messages:
                continue
            queue_arn = sqs.get_queue_attributes(QueueUrl=poller.queue_url, AttributeNames=['QueueArn'])['Attributes'][
                'QueueArn'
            ]
            event = {'Records': [_sqs_record(m, queue_arn) for m in messages]}
            try:
                result = self.runtime.invoke(poller.function_name, event, source='aws:sqs')
            except FunctionError:
                continue  # the whole batch becomes visible again after the visibility timeout
            failed = set()
            if poller.report_batch_item_failures and isinstance(result, dict):
                failed = {f.get('itemIdentifier') for f in result.get('batchItemFailures') or []}
            for message in messages:
                if message['MessageId'] not in failed:
                    sqs.delete_message(QueueUrl=poller.queue_url, ReceiptHandle=message['ReceiptHandle'])

    def _start_schedules(self) -> None:
        events = self.client('events')
        for rule in events.list_rules().get('Rules', []):
            if not rule.get('ScheduleExpression') or rule.get('State') == 'DISABLED':
                continue
            interval = min(_rate_seconds(rule['ScheduleExpression']), self.schedule_seconds)
            for target in events.list_targets_by_rule(Rule=rule['Name'])['Targets']:
                if ':function:' in target['Arn'] and self._events_may_invoke(target['Arn'], rule['Arn']):
                    payload = json.loads(target['Input']) if target.get('Input') else _scheduled_event(rule)
                    self._spawn(
                        f'schedule-{rule["Name"]}', lambda a=target['Arn'], p=payload, i=interval: self._tick(a, p, i)
                    )

    def _events_may_invoke(self, function_arn: str, rule_arn: str) -> bool:
        """EventBridge invokes a function only where the function's resource policy lets the rule do so."""
        import botocore.exceptions

        try:
            policy = json.loads(self.client('lambda').get_policy(FunctionName=function_arn)['Policy'])
        except botocore.exceptions.ClientError:
            policy = {'Statement': []}
        for statement in policy.get('Statement', []):
            principal = statement.get('Principal')
            service = principal.get('Service') if isinstance(principal, dict) else principal
            source = (statement.get('Condition') or {}).get('ArnLike', {}).get('AWS:SourceArn', rule_arn)
            if statement.get('Effect') == 'Allow' and service == 'events.amazonaws.com' and source == rule_arn:
                return True
        self.iam.decide('arn:aws:iam::events.amazonaws.com', [], 'lambda:InvokeFunction', function_arn)
        logging.getLogger('infra.local').error(
            'schedule %s may not invoke %s (no lambda permission)', rule_arn, function_arn
        )
        return False

    def _tick(self, function_arn: str, payload: dict[str, Any], interval: float) -> None:
        while not self._stopping.wait(interval):
            with self._schedules, contextlib.suppress(FunctionError):
                self.runtime.invoke(function_arn, payload, source='schedule')

    @contextlib.contextmanager
    def paused_schedules(self) -> Iterator[None]:
        """No scheduled run starts (and none is running) inside this block: for a test that runs a scheduled
        job by hand and asserts what that run did (offline schedules tick every few seconds)."""
        with self._schedules:
            yield

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)


def _deploy_state_machines_to_the_executing_backend() -> None:
    """moto's CloudFormation creates state machines in the backend that cannot execute them."""
    import moto.stepfunctions.models as sfn_models
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    sfn_models.stepfunctions_backends = stepfunctions_parser_backends  # type: ignore[assignment]


def _serialize_dynamodb() -> None:
    """Make moto's DynamoDB atomic under concurrent requests, as DynamoDB is.

    moto checks a transaction's conditions and applies its writes without a lock, so two concurrent
    transactions can both pass ``available >= :amount`` and overspend (seen: 30 racing task creates on
    credit for 3 accepted more than 3). One lock around every read and write makes each operation, and
    each transaction, isolated: slower under contention, but the credit rules hold offline too.
    """
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, '_atelier_serialized', False):
        return
    lock = threading.RLock()
    for name in (
        'put_item',
        'get_item',
        'query',
        'scan',
        'update_item',
        'delete_item',
        'transact_write_items',
        'transact_get_items',
        'batch_write_item',
        'batch_get_item',
    ):
        original = getattr(DynamoDBBackend, name, None)
        if original is not None:
            setattr(DynamoDBBackend, name, _locked(original, lock))
    DynamoDBBackend._atelier_serialized = True  # type: ignore[attr-defined]


def _locked(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    return locked


def _zip_dir(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob('*')):
            if path.is_file() and '__pycache__' not in path.parts:
                archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    return {
        'messageId': message['MessageId'],
        'receiptHandle': message['ReceiptHandle'],
        'body': message['Body'],
        'attributes': message.get('Attributes', {}),
        'messageAttributes': message.get('MessageAttributes', {}),
        'md5OfBody': message.get('MD5OfBody', ''),
        'eventSource': 'aws:sqs',
        'eventSourceARN': queue_arn,
        'awsRegion': REGION,
    }


def _rate_seconds(expression: str) -> float:
    match = re.fullmatch(r'rate\((\d+) (minute|minutes|hour|hours|day|days)\)', expression.strip())
    if not match:
        return 60.0  # cron() expressions: once a minute is often enough offline
    unit = {'minute': 60, 'hour': 3600, 'day': 86400}[match.group(2).rstrip('s')]
    return float(int(match.group(1)) * unit)


def _scheduled_event(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        'version': '0',
        'id': 'local',
        'detail-type': 'Scheduled Event',
        'source': 'aws.events',
        'account': ACCOUNT_ID,
        'time': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'region': REGION,
        'resources': [rule['Arn']],
        'detail': {},
    }


@contextlib.contextmanager
def running_stack(**kwargs: Any) -> Iterator[OfflineStack]:
    stack = OfflineStack(**kwargs)
    try:
        yield stack.start()
    finally:
        stack.stop()
