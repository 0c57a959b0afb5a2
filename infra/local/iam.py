"""IAM on the offline AWS endpoint: every call is authenticated and authorized as AWS would, action AND resource.

moto can authenticate requests (``INITIAL_NO_AUTH_ACTION_COUNT``), but it authorizes each one against the
resource ``*``, so a statement scoped to a real ARN never matches (every least-privilege role would be denied
everything, and a ``Resource: "*"`` grant is checked by action only), and its trust-policy check crashes on
``Service`` principals. :class:`Enforcement` replaces moto's authorization step with one that:

1. authenticates the caller by its access key (an IAM user, e.g. the administrator printed by ``make dev``, or
   the assumed-role session of a function, the state machine or a poller) and checks the SigV4 signature;
2. works out every (action, resource ARN) pair the request needs, the way IAM does: a ``TransactWriteItems``
   needs ``dynamodb:PutItem``/``UpdateItem``/``DeleteItem``/``ConditionCheckItem`` on each item's table, a
   ``Query`` on an index needs the index ARN, ``ssm:GetParameter`` the parameter's ARN, an S3 object its
   ``bucket/key`` ARN (presigned URLs and POST policies are authorized as their signer; a DeleteObjects each of
   its keys), and so on;
3. evaluates each pair against the caller's policies with moto's own evaluator (``IAMPolicy``: explicit deny
   wins, wildcards, index ARNs) and answers ``AccessDenied``/``AccessDeniedException`` in the service's own
   shape, naming principal, action and resource, exactly as AWS words it.

Every decision is recorded (:attr:`Enforcement.decisions`), so the tests can fail a run on any denial and name
the function, action and resource.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

ACCOUNT_ID = '123456789012'
ADMIN_USER = 'atelier-local-admin'
_ADMIN_POLICY = json.dumps(
    {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}
)

#: TransactWriteItems is authorized item by item, as the item's own action on the item's table.
_TRANSACT_ACTIONS = {
    'Put': 'PutItem',
    'Update': 'UpdateItem',
    'Delete': 'DeleteItem',
    'ConditionCheck': 'ConditionCheckItem',
    'Get': 'GetItem',
}
#: SQS batch operations are authorized as their single-message action.
_SQS_ACTIONS = {
    'SendMessageBatch': 'SendMessage',
    'DeleteMessageBatch': 'DeleteMessage',
    'ChangeMessageVisibilityBatch': 'ChangeMessageVisibility',
}
#: Lambda API operations whose IAM action has another name.
_LAMBDA_ACTIONS = {'Invoke': 'InvokeFunction', 'InvokeWithResponseStream': 'InvokeFunction'}
#: REST services whose paths and streamed bodies moto's signer does not recompute as the SDK signed them: the
#: caller is authenticated by its access key (and session token) alone.
_REST_SERVICES = {'s3', 'lambda'}
#: Services that answer errors as JSON (AccessDeniedException); the rest answer XML (AccessDenied).
_JSON_SERVICES = {'dynamodb', 'ssm', 'states', 'lambda', 'logs', 'events', 'monitoring', 'sqs'}


@dataclass(frozen=True)
class Decision:
    """One authorization: who asked for what, and the answer."""

    principal: str  # arn:aws:iam::...:user/name or arn:aws:sts::...:assumed-role/RoleName/session
    action: str
    resource: str
    allowed: bool
    at: float

    @property
    def role_name(self) -> str | None:
        parts = self.principal.split(':assumed-role/')
        return parts[1].split('/')[0] if len(parts) == 2 else None

    def message(self) -> str:
        """AWS's own wording of a denial."""
        return (
            f'User: {self.principal} is not authorized to perform: {self.action} on resource: {self.resource} '
            f'because no identity-based policy allows the {self.action} action'
        )


class Enforcement:
    """The offline endpoint's IAM: on once installed and enabled; one per process (moto's backends are too)."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.enabled = False
        self.decisions: list[Decision] = []
        self._lock = threading.Lock()
        self._credentials: dict[str, dict[str, str]] = {}

    # ------------------------------------------------------------------ identities
    def admin_credentials(self) -> dict[str, str]:
        """An IAM user allowed everything: the offline stack's own calls, ops and the AWS CLI (like the console)."""
        from moto.iam.models import iam_backends

        iam = iam_backends[ACCOUNT_ID]['aws']
        if ADMIN_USER not in iam.users:
            iam.create_user(region_name=self.region, user_name=ADMIN_USER, path='/', tags=[])
            iam.put_user_policy(ADMIN_USER, 'administrator', _ADMIN_POLICY)
            key = iam.create_access_key(ADMIN_USER)
            self._credentials[ADMIN_USER] = {
                'AWS_ACCESS_KEY_ID': key.access_key_id,
                'AWS_SECRET_ACCESS_KEY': key.secret_access_key,
            }
        return dict(self._credentials[ADMIN_USER])

    def role_credentials(self, role_arn: str, session_name: str = 'atelier-local') -> dict[str, str]:
        """Temporary credentials of ``role_arn``, as the service that the role trusts (Lambda, Step Functions)
        assumes it: granted by the role's trust policy, not by a caller's permissions, so taken straight from
        moto's STS backend. Cached: one session per role, valid for the life of the offline stack."""
        with self._lock:
            if role_arn not in self._credentials:
                from moto.sts.models import sts_backends

                role = sts_backends[ACCOUNT_ID]['aws'].assume_role(
                    region_name=self.region,
                    role_session_name=session_name,
                    role_arn=role_arn,
                    policy='',
                    duration=43200,
                    external_id='',
                )
                self._credentials[role_arn] = {
                    'AWS_ACCESS_KEY_ID': role.access_key_id,
                    'AWS_SECRET_ACCESS_KEY': role.secret_access_key,
                    'AWS_SESSION_TOKEN': role.session_token,
                }
            return dict(self._credentials[role_arn])

    # ------------------------------------------------------------------ switch
    def install(self) -> None:
        """Put this enforcement in moto's request path (idempotent; off until :meth:`enable`)."""
        global _ACTIVE
        _ACTIVE = self
        _patch_moto()

    def enable(self) -> None:
        from moto import settings
        from moto.core.authorization import ActionAuthenticatorMixin

        settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # type: ignore[assignment]
        ActionAuthenticatorMixin.request_count = 0
        self.enabled = True

    def disable(self) -> None:
        from moto import settings

        self.enabled = False
        settings.INITIAL_NO_AUTH_ACTION_COUNT = float('inf')  # type: ignore[assignment]

    # ------------------------------------------------------------------ decisions
    def denied(self, since: int = 0) -> list[Decision]:
        with self._lock:
            return [d for d in self.decisions[since:] if not d.allowed]

    def decide(self, principal: str, policies: list[Any], action: str, resource: str) -> Decision:
        from moto.iam.access_control import IAMPolicy, PermissionResult

        results = [IAMPolicy(_document(policy)).is_action_permitted(action, resource) for policy in policies]
        allowed = PermissionResult.DENIED not in results and PermissionResult.PERMITTED in results
        decision = Decision(principal, action, resource, allowed, time.time())
        with self._lock:
            self.decisions.append(decision)
        return decision


_ACTIVE: Enforcement | None = None


def _document(policy: Any) -> Any:
    """What moto's ``IAMPolicy`` takes: a managed policy, a JSON string, or a JSON string of an inline
    document that CloudFormation stored as a dict."""
    if isinstance(policy, dict) and 'policy_document' not in policy:
        return json.dumps(policy)
    return policy


# ---------------------------------------------------------------------- what a request asks for
def requested_actions(service: str, action: str, region: str, request: Any, resource: str) -> Iterator[tuple[str, str]]:
    """Every (IAM action, resource ARN) pair that ``request`` (a moto ``BaseResponse``) needs."""
    operation = action.split(':', 1)[1]
    if service == 's3':
        deleted = _deleted_keys(action, request, resource)
        if deleted is not None:
            for key in deleted:  # DeleteObjects: s3:DeleteObject on every key, as S3 authorizes it
                yield action, f'{resource}/{key}'
            return
        yield action, _s3_resource(action, request, resource)
        return
    params = _params(request)
    if service == 'dynamodb':
        yield from _dynamodb(operation, params, region)
    elif service == 'ssm':
        names = [params['Name']] if 'Name' in params else list(params.get('Names') or [])
        if 'Path' in params:
            names.append(params['Path'])
        for name in names or ['*']:
            if name.startswith('arn:'):
                yield action, name
                continue
            name = name.split(':', 1)[0]  # name:version and name:label are authorized on the parameter
            yield action, _arn('ssm', region, f'parameter{name}' if name.startswith('/') else f'parameter/{name}')
    elif service == 'sqs':
        queue = str(params.get('QueueUrl') or params.get('QueueName') or '').rstrip('/').rsplit('/', 1)[-1]
        yield f'sqs:{_SQS_ACTIONS.get(operation, operation)}', _arn('sqs', region, queue) if queue else '*'
    elif service == 'states':
        yield action, _states_resource(params)
    elif service == 'lambda':
        yield f'lambda:{_LAMBDA_ACTIONS.get(operation, operation)}', _lambda_resource(request, region)
    elif service == 'sts' and operation == 'AssumeRole':
        yield action, str(params.get('RoleArn', '*'))
    else:
        yield action, resource


def _dynamodb(operation: str, params: dict[str, Any], region: str) -> Iterator[tuple[str, str]]:
    def table(name: str, index: str | None = None) -> str:
        arn = name if name.startswith('arn:') else _arn('dynamodb', region, f'table/{name}')
        return f'{arn}/index/{index}' if index else arn

    if operation in ('TransactWriteItems', 'TransactGetItems'):
        for item in params.get('TransactItems') or []:
            for kind, body in item.items():
                yield f'dynamodb:{_TRANSACT_ACTIONS.get(kind, kind)}', table(body['TableName'])
    elif operation in ('BatchWriteItem', 'BatchGetItem'):
        for name in params.get('RequestItems') or {}:
            yield f'dynamodb:{operation}', table(name)
    elif 'TableName' in params:
        yield f'dynamodb:{operation}', table(params['TableName'], params.get('IndexName'))
    else:
        yield f'dynamodb:{operation}', '*'


def _states_resource(params: dict[str, Any]) -> str:
    for key in ('stateMachineArn', 'executionArn', 'activityArn'):
        if key in params:
            return str(params[key])
    if 'taskToken' in params:
        return _state_machine_of_token(str(params['taskToken']))
    return '*'


def _state_machine_of_token(token: str) -> str:
    """The state machine whose running execution waits on ``token`` (callbacks are authorized on it)."""
    from moto.stepfunctions.parser.models import stepfunctions_parser_backends

    for regions in stepfunctions_parser_backends.values():
        for backend in regions.values():
            for execution in backend._get_executions():
                worker = getattr(execution, 'exec_worker', None)
                if worker is not None and worker.env.callback_pool_manager.get(token) is not None:
                    return str(execution.state_machine_arn)
    return '*'


def _lambda_resource(request: Any, region: str) -> str:
    match = re.search(r'/functions/([^/]+)', unquote(urlparse(request.uri).path))
    if not match:
        return '*'
    name = match.group(1).split(':function:')[-1]  # a name, a partial ARN or a full ARN
    qualifier = (request.querystring.get('Qualifier') or [None])[0]
    if qualifier and ':' not in name:
        name = f'{name}:{qualifier}'  # a qualified invoke needs a grant on function:name:qualifier (or name:*)
    return _arn('lambda', region, f'function:{name}')


def _s3_resource(action: str, request: Any, resource: str) -> str:
    # A browser POST upload names its key in the form, not the path: authorize the object, not the bucket.
    key = (request.querystring.get('key') or [None])[0] if action == 's3:PutObject' else None
    if key and resource.count('/') == 0:
        return f'{resource}/{key}'
    return resource


def _deleted_keys(action: str, request: Any, resource: str) -> list[str] | None:
    """The keys of a DeleteObjects request (``POST /{bucket}?delete``), or None for any other request.

    S3 checks ``s3:DeleteObject`` on each key and answers the denied ones in the response's ``Errors``; here a
    denial of any key refuses the whole request (louder, and the decision names the key)."""
    if action != 's3:DeleteObject' or resource.count('/') or 'delete' not in request.querystring:
        return None
    import xml.etree.ElementTree as ElementTree

    body = request.body if isinstance(request.body, bytes | str) else request.raw_body
    root = ElementTree.fromstring(body)
    return [element.text or '' for element in root.iter() if element.tag.rsplit('}', 1)[-1] == 'Key']


def _params(request: Any) -> dict[str, Any]:
    """The operation's parameters: the JSON body (JSON protocols) or the form/query (query protocol)."""
    body = request.body if isinstance(request.body, dict) else request.raw_body
    if isinstance(body, dict):
        return body
    if body:
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                return parsed
        except (ValueError, UnicodeDecodeError):
            pass
    return {k: v[0] if isinstance(v, list) and len(v) == 1 else v for k, v in request.querystring.items()}


def _arn(service: str, region: str, rest: str) -> str:
    return f'arn:aws:{service}:{region}:{ACCOUNT_ID}:{rest}'


# ---------------------------------------------------------------------- moto's request path
def _authorize(self: Any, iam_request_cls: type, resource: str = '*') -> None:
    """Replaces ``ActionAuthenticatorMixin._authenticate_and_authorize_action`` (self is moto's response)."""
    enforcement = _ACTIVE
    if enforcement is None or not enforcement.enabled:
        return
    if self.headers.get('X-Amz-Target') in type(self).PUBLIC_OPERATIONS:
        return
    if 'Authorization' not in self.headers:
        if iam_request_cls.__name__ != 'S3IAMRequest':  # only S3 takes presigned (query) authentication
            from moto.core.exceptions import InvalidClientTokenIdError

            raise InvalidClientTokenIdError()
        service, region, principal, policies = _presigned_caller(self)
        action = f'{service}:{self._get_action()}'
    else:
        parsed_url = urlparse(self.uri)
        path = self.raw_path + (f'?{parsed_url.query}' if parsed_url.query else '')
        iam_request = iam_request_cls(
            account_id=self.current_account,
            method=self.method,
            path=path,
            data=self.data,
            body=self.raw_body,
            headers=self.headers,
            action=self._get_action(),
        )
        if iam_request._service not in _REST_SERVICES:
            iam_request.check_signature()
        service, region, action = iam_request._service, iam_request._region, iam_request._action
        principal, policies = iam_request._access_key.arn, iam_request._access_key.collect_policies()
    if action == 'sts:GetCallerIdentity':
        return
    for needed, arn in requested_actions(service, action, region, self, resource):
        decision = enforcement.decide(principal, policies, needed, arn)
        if decision.allowed and needed == 'sts:AssumeRole' and not _trusted(principal, arn):
            decision = enforcement.decide(principal, [], needed, arn)  # the role's trust policy says no
        if not decision.allowed:
            raise _access_denied(service, decision)


def _trusted(principal: str, role_arn: str) -> bool:
    """Whether ``role_arn``'s trust policy lets ``principal`` assume it."""
    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.iam.models import iam_backends

    try:
        role = iam_backends[ACCOUNT_ID]['aws'].get_role_by_arn(role_arn)
    except Exception:
        return False
    result = IAMPolicy(_document(role.assume_role_policy_document)).is_action_permitted(
        'sts:AssumeRole', role_arn, principal
    )
    return bool(result == PermissionResult.PERMITTED)


def _presigned_caller(request: Any) -> tuple[str, str, str, list[Any]]:
    """The signer of a presigned URL (query) or a POST policy (form): S3 authorizes the request as them."""
    from moto.iam.access_control import CreateAccessKeyFailure, create_access_key
    from moto.s3.exceptions import S3AccessDeniedError

    fields = {k.lower(): v for k, v in request.querystring.items()}
    if _expired(fields):
        raise S3AccessDeniedError()  # "Request has expired"
    token = (fields.get('x-amz-security-token') or [None])[0]
    credential = (fields.get('x-amz-credential') or [''])[0].split('/')  # SigV4: key/date/region/service/...
    if len(credential) >= 5:
        access_key, region, service = credential[0], credential[2], credential[3]
    elif fields.get('awsaccesskeyid'):  # SigV2 query auth, which boto3 still uses for S3 presigned GETs
        access_key, region, service = fields['awsaccesskeyid'][0], request.region, 's3'
    else:
        raise S3AccessDeniedError()  # anonymous: the bucket is private and grants nobody
    headers = {'X-Amz-Security-Token': token} if token else {}
    try:
        key = create_access_key(account_id=ACCOUNT_ID, partition='aws', access_key_id=access_key, headers=headers)
    except CreateAccessKeyFailure:
        raise S3AccessDeniedError() from None
    return service, region, key.arn, key.collect_policies()


def _expired(fields: dict[str, Any]) -> bool:
    """A presigned URL past its expiry (SigV4 ``X-Amz-Date`` + ``X-Amz-Expires``, SigV2 ``Expires``)."""
    import calendar

    def first(name: str) -> str | None:
        value = fields.get(name)
        return str(value[0] if isinstance(value, list) else value) if value else None

    try:
        if first('x-amz-date') and first('x-amz-expires'):
            signed = calendar.timegm(time.strptime(str(first('x-amz-date')), '%Y%m%dT%H%M%SZ'))
            return time.time() > signed + int(str(first('x-amz-expires')))
        if first('expires') and first('awsaccesskeyid'):
            return time.time() > int(str(first('expires')))
    except ValueError:
        return True
    return False


def _access_denied(service: str, decision: Decision) -> Exception:
    from moto.core.exceptions import AccessDeniedError, JsonRESTError
    from moto.s3.exceptions import S3AccessDeniedError

    if service == 's3':
        error = S3AccessDeniedError()
        error.message = decision.message()
        return error
    if service in _JSON_SERVICES:
        json_error = JsonRESTError('AccessDeniedException', decision.message())
        json_error.code = 403 if service == 'lambda' else 400
        return json_error
    xml_error = AccessDeniedError(user_arn=decision.principal, action=decision.action)
    xml_error.message = decision.message()
    return xml_error


def _check_principal(self: Any, principal: str) -> bool:
    """moto's trust-policy principal check, without its crash on ``{"Service": ...}`` principals: an IAM
    caller matches only an ``AWS`` principal (a role that trusts only a service cannot be assumed by a user)."""
    expected = self._statement.get('Principal')
    if not expected:
        return True
    if expected == '*':
        return True
    aws = expected.get('AWS') if isinstance(expected, dict) else None
    if aws is None:
        return False
    return bool(aws == '*' or principal == aws or (isinstance(aws, list) and principal in aws))


_patched = False


def _patch_moto() -> None:
    global _patched
    if _patched:
        return
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMPolicyStatement

    ActionAuthenticatorMixin._authenticate_and_authorize_action = _authorize  # type: ignore[method-assign]
    IAMPolicyStatement._check_principal = _check_principal  # type: ignore[method-assign]
    _patched = True


def state_machine_clients(credentials: Callable[[str], dict[str, str]]) -> None:
    """Let moto's ASL interpreter call Lambda as the state machine's own role (moto signs as ``ak``/``sk``)."""
    import boto3
    from botocore.config import Config
    from moto.settings import moto_server_port
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        keys = credentials(state_credentials.role_arn)
        return _UnknownErrors(
            boto3.client(
                service,
                region_name=region,
                endpoint_url=f'http://127.0.0.1:{moto_server_port()}',
                aws_access_key_id=keys['AWS_ACCESS_KEY_ID'],
                aws_secret_access_key=keys['AWS_SECRET_ACCESS_KEY'],
                aws_session_token=keys['AWS_SESSION_TOKEN'],
                # Lambda's own invoke timeout is 15 minutes; the interpreter must outwait the longest function.
                config=Config(parameter_validation=False, retries={'total_max_attempts': 1}, read_timeout=960),
            )
        )

    lambda_eval_utils.boto_client_for = boto_client_for  # type: ignore[assignment]


class _UnknownErrors:
    """A Lambda client as Step Functions reads its answers: a function error without an ``errorType`` (a
    timeout, an out-of-memory kill) is the error ``Lambda.Unknown``, where moto's interpreter says ``Exception``."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def invoke(self, **kwargs: Any) -> Any:
        response = self._client.invoke(**kwargs)
        if response.get('FunctionError'):
            payload = json.loads(response['Payload'].read() or b'{}')
            if isinstance(payload, dict) and 'errorType' not in payload:
                payload = {'errorType': 'Lambda.Unknown', **payload}
            response['Payload'] = io.BytesIO(json.dumps(payload).encode())
        return response
