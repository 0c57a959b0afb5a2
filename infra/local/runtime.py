"""Lambda offline: every function runs in execution environments of its own, as in AWS.

moto's Docker-free Lambda backend answers every ``Invoke`` with a canned payload. The offline stack replaces
that one method, so every invocation (from the gateway, the state machine, an SQS poller, a schedule or an
``aws lambda invoke``) reaches :class:`ProcessRuntime`, which runs the handler the template names
(``CodeUri`` + ``Handler``) the way Lambda does:

- **One process per execution environment** (:mod:`infra.local.worker`), started on a function's first
  invocation and reused while warm, one invocation at a time; concurrent invocations get more environments,
  up to ``max_environments`` per function (further invocations wait for one to free up, where Lambda would
  scale further). The first invocation of an environment is a cold start: its init time is reported as
  Lambda reports ``Init Duration``.
- **Only the function's own environment**: the variables the template gives it, Lambda's reserved ones, and
  the temporary credentials of the function's own role (``AWS_ACCESS_KEY_ID``/``SECRET``/``SESSION_TOKEN``),
  so every AWS call it makes is authorized as that role by the offline endpoint (:mod:`infra.local.iam`).
- **Its ``Timeout`` and ``MemorySize``**: an invocation that overruns is stopped (the process is killed, as
  Lambda discards a timed-out sandbox) and answered with Lambda's ``Task timed out after N.00 seconds``; one
  whose resident memory passes ``MemorySize`` is killed as ``Runtime.OutOfMemory``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.local.template import FunctionSpec

log = logging.getLogger('infra.local.lambda')

WORKER = Path(__file__).with_name('worker.py')
#: Lambda's own limit on the init phase of an on-demand environment.
INIT_TIMEOUT_SECONDS = 10.0
_MEMORY_CHECK_SECONDS = 0.2


@dataclass
class Invocation:
    """One handler run, kept for tests, the bench and the dev console."""

    function: str
    source: str
    started: float
    request_id: str = ''
    duration_ms: float = 0.0
    init_ms: float | None = None  # set on a cold start: the new environment's init phase
    max_memory_mb: float = 0.0
    error: str | None = None
    message_ids: tuple[str, ...] = ()  # the SQS messages of a batch, to trace a message to its consumer


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read (for in-process tests)."""

    function_name: str
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ''
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = ''
    log_stream_name: str = ''
    function_version: str = '$LATEST'
    deadline_ms: float = field(default_factory=lambda: time.time() * 1000 + 15_000)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.deadline_ms - time.time() * 1000))


class FunctionError(Exception):
    """The invocation failed (the handler raised, timed out or ran out of memory); carries Lambda's payload."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload.get('errorMessage'))
        self.payload = payload


@dataclass(frozen=True)
class DeployedFunction:
    """A function as deployed: the template's code and handler plus what Lambda knows of it."""

    spec: FunctionSpec
    name: str
    arn: str
    role_arn: str
    timeout: int
    memory_mb: int
    environment: Mapping[str, str]

    @classmethod
    def of(cls, spec: FunctionSpec, configuration: Mapping[str, Any]) -> DeployedFunction:
        variables = (configuration.get('Environment') or {}).get('Variables', {})
        return cls(
            spec=spec,
            name=configuration['FunctionName'],
            arn=configuration['FunctionArn'],
            role_arn=configuration['Role'],
            timeout=int(configuration.get('Timeout') or 3),
            memory_mb=int(configuration.get('MemorySize') or 128),
            # CloudFormation hands Number parameters over as numbers; Lambda's environment is strings.
            environment={str(k): str(v) for k, v in variables.items()},
        )


class _Stopped(Exception):
    """The environment is gone: timed out, out of memory, or its process exited."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload['errorMessage'])
        self.payload = payload


class ExecutionEnvironment:
    """One worker process for one function."""

    def __init__(self, function: DeployedFunction, environment: dict[str, str], layers: str) -> None:
        self.function = function
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), f'{to_child_r},{from_child_w}', layers, repr(time.time())],
                env=environment,
                cwd=function.spec.code_dir,
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
            )
        except OSError:
            for fd in (self._to_child, self._from_child):
                os.close(fd)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._buffer = b''
        self.init_ms: float | None = None

    def start(self) -> float:
        """Wait for the init phase (imports of the handler module); its duration in ms."""
        ready = self._read(INIT_TIMEOUT_SECONDS, memory_mb=None, request_id='')
        if not ready.get('ready'):
            self.kill()
            raise _Stopped(ready['error'])
        self.init_ms = float(ready['init_ms'])
        return self.init_ms

    def call(self, event: Any, context: dict[str, Any], timeout: float) -> dict[str, Any]:
        line = json.dumps({'event': event, 'context': context}).encode() + b'\n'
        try:
            self._write_all(line)
        except OSError:
            raise _Stopped(_runtime_exit(context['aws_request_id'])) from None
        return self._read(timeout, memory_mb=self.function.memory_mb, request_id=context['aws_request_id'])

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._to_child, view)
            view = view[written:]

    def _read(self, timeout: float, *, memory_mb: int | None, request_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b'\n' not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise _Stopped(_timed_out(request_id, timeout))
            try:
                readable, _, _ = select.select([self._from_child], [], [], min(remaining, _MEMORY_CHECK_SECONDS))
                chunk = os.read(self._from_child, 1 << 16) if readable else None
            except (OSError, ValueError):  # the runtime was closed under this invocation
                raise _Stopped(_runtime_exit(request_id)) from None
            if readable:
                if not chunk:
                    self.kill()
                    raise _Stopped(_runtime_exit(request_id))
                self._buffer += chunk
            elif memory_mb is not None and _rss_mb(self.process.pid) > memory_mb:
                self.kill()
                raise _Stopped(_out_of_memory(request_id))
        line, self._buffer = self._buffer.split(b'\n', 1)
        message: dict[str, Any] = json.loads(line)
        return message

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._to_child = self._from_child = -1

    def close(self) -> None:
        """End the environment: the worker exits when its request pipe closes."""
        with contextlib.suppress(OSError):
            os.close(self._to_child)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=2)
        self.kill()


class _Pool:
    """The execution environments of one function: warm ones are reused, a busy pool waits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.idle: list[ExecutionEnvironment] = []
        self.all: set[ExecutionEnvironment] = set()
        self.starting = 0
        self.condition = threading.Condition()


class Runtime:
    """What every runtime shares: the deployed functions by name, the invocation log, moto's Invoke contract."""

    def __init__(self, specs: dict[str, FunctionSpec]) -> None:
        self.specs = specs
        self.functions: dict[str, DeployedFunction] = {}  # by physical name
        self.invocations: list[Invocation] = []
        self._lock = threading.Lock()

    def register(self, logical_id: str, configuration: Mapping[str, Any]) -> DeployedFunction:
        function = DeployedFunction.of(self.specs[logical_id], configuration)
        self.functions[function.name] = function
        return function

    def function(self, function_name_or_arn: str) -> DeployedFunction:
        name = function_name_or_arn.split(':function:')[-1].split(':')[0]
        return self.functions[name]

    def logical_id(self, function_name_or_arn: str) -> str:
        return self.function(function_name_or_arn).spec.logical_id

    def by_logical_id(self, logical_id: str) -> DeployedFunction:
        return next(f for f in self.functions.values() if f.spec.logical_id == logical_id)

    def record(self, invocation: Invocation) -> None:
        with self._lock:
            self.invocations.append(invocation)

    def invoke(self, function_name_or_arn: str, event: Any, *, source: str) -> Any:
        raise NotImplementedError

    def invoke_bytes(
        self, function_name_or_arn: str, body: bytes | str | None, response_headers: dict[str, Any]
    ) -> bytes:
        """moto's ``Invoke`` contract: JSON bytes in, JSON bytes out, errors flagged in a header."""
        try:
            event = json.loads(body) if body else {}
        except ValueError:
            from moto.core.exceptions import JsonRESTError

            raise JsonRESTError('InvalidRequestContentException', 'Could not parse request body into json') from None
        try:
            result = self.invoke(function_name_or_arn, event, source=_source_of(event))
        except FunctionError as exc:
            response_headers['x-amz-function-error'] = 'Unhandled'
            return json.dumps(exc.payload).encode()
        return json.dumps(result).encode()

    def close(self) -> None:
        return


class ProcessRuntime(Runtime):
    """Maps deployed function names to their pools of execution environments and runs invocations there."""

    def __init__(
        self,
        specs: dict[str, FunctionSpec],
        *,
        region: str,
        layer_paths: list[str],
        endpoint: Callable[[], str],
        credentials: Callable[[str], dict[str, str]],
        extra_environment: Mapping[str, str] | None = None,
        max_environments: int = 4,
    ) -> None:
        super().__init__(specs)
        self.region = region
        self.layer_paths = layer_paths
        self._endpoint = endpoint
        self._credentials = credentials
        self.extra_environment = dict(extra_environment or {})
        self.max_environments = max_environments
        self._pools: dict[str, _Pool] = {}
        self._closed = False

    # ------------------------------------------------------------------ registry
    def register(self, logical_id: str, configuration: Mapping[str, Any]) -> DeployedFunction:
        function = super().register(logical_id, configuration)
        self._pools[function.name] = _Pool(self.max_environments)
        return function

    def environment_of(self, function: DeployedFunction) -> dict[str, str]:
        """What a new execution environment of ``function`` sees in ``os.environ``, and nothing else."""
        stream = f'{time.strftime("%Y/%m/%d")}/[$LATEST]{uuid.uuid4().hex}'
        return {
            'PATH': os.environ.get('PATH', '/usr/local/bin:/usr/bin:/bin'),
            'LANG': 'en_US.UTF-8',
            'TZ': ':UTC',
            'PYTHONUNBUFFERED': '1',
            'LAMBDA_TASK_ROOT': str(function.spec.code_dir),
            '_HANDLER': function.spec.handler,
            'AWS_EXECUTION_ENV': 'AWS_Lambda_python3.12',
            'AWS_LAMBDA_FUNCTION_NAME': function.name,
            'AWS_LAMBDA_FUNCTION_VERSION': '$LATEST',
            'AWS_LAMBDA_FUNCTION_MEMORY_SIZE': str(function.memory_mb),
            'AWS_LAMBDA_LOG_GROUP_NAME': f'/aws/lambda/{function.name}',
            'AWS_LAMBDA_LOG_STREAM_NAME': stream,
            'AWS_REGION': self.region,
            'AWS_DEFAULT_REGION': self.region,
            # Offline only: where the AWS SDK finds the (moto) endpoint; in AWS it resolves the real ones.
            'AWS_ENDPOINT_URL': self._endpoint(),
            **self._credentials(function.role_arn),
            **function.environment,
            **self.extra_environment,
        }

    # ------------------------------------------------------------------ invoking
    def invoke(self, function_name_or_arn: str, event: Any, *, source: str) -> Any:
        """Run the function on ``event`` in one of its environments; raise :class:`FunctionError` if it fails."""
        function = self.function(function_name_or_arn)
        record = Invocation(
            function=function.spec.logical_id,
            source=source,
            started=time.time(),
            request_id=str(uuid.uuid4()),
            message_ids=_message_ids(event),
        )
        pool = self._pools[function.name]
        environment: ExecutionEnvironment | None = None
        try:
            environment, cold = self._acquire(function, pool)
            if cold:
                record.init_ms = environment.start()
            context = {
                'function_name': function.name,
                'invoked_function_arn': function.arn,
                'memory_limit_in_mb': function.memory_mb,
                'aws_request_id': record.request_id,
                'log_group_name': f'/aws/lambda/{function.name}',
                'log_stream_name': 'local',
                'deadline_ms': time.time() * 1000 + function.timeout * 1000,
            }
            reply = environment.call(event, context, function.timeout)
            record.max_memory_mb = float(reply.get('max_rss_mb', 0.0))
            if 'error' in reply:
                record.error = f'{reply["error"].get("errorType")}: {reply["error"].get("errorMessage")}'
                raise FunctionError(reply['error'])
            return reply.get('result')
        except _Stopped as stopped:
            record.error = stopped.payload['errorMessage']
            self._discard(pool, environment)
            environment = None
            raise FunctionError(stopped.payload) from None
        finally:
            if environment is not None:
                self._release(pool, environment)
            record.duration_ms = (time.time() - record.started) * 1000 - (record.init_ms or 0.0)
            self.record(record)
            log.info(_report(record, function))

    def _acquire(self, function: DeployedFunction, pool: _Pool) -> tuple[ExecutionEnvironment, bool]:
        with pool.condition:
            while True:
                if self._closed:
                    raise _Stopped(_runtime_exit(''))
                if pool.idle:
                    return pool.idle.pop(), False
                if len(pool.all) + pool.starting < pool.limit:
                    pool.starting += 1
                    break
                pool.condition.wait()
        try:
            environment = ExecutionEnvironment(
                function, self.environment_of(function), os.pathsep.join(self.layer_paths)
            )
        finally:
            with pool.condition:
                pool.starting -= 1
                pool.condition.notify()  # a failed start frees its place for a waiter
        with pool.condition:
            pool.all.add(environment)
        return environment, True

    def _release(self, pool: _Pool, environment: ExecutionEnvironment) -> None:
        with pool.condition:
            closed = self._closed
            if not closed:
                pool.idle.append(environment)
            pool.condition.notify()
        if closed:
            environment.kill()

    def _discard(self, pool: _Pool, environment: ExecutionEnvironment | None) -> None:
        if environment is not None:
            environment.kill()
            with pool.condition:
                pool.all.discard(environment)
                pool.condition.notify()

    def warm_environments(self, logical_id: str) -> int:
        pool = self._pools[self.by_logical_id(logical_id).name]
        with pool.condition:
            return len(pool.all)

    def retire(self, logical_id: str) -> None:
        """End a function's idle environments, so that its next invocation is a cold start (bench, tests)."""
        pool = self._pools[self.by_logical_id(logical_id).name]
        with pool.condition:
            idle, pool.idle = pool.idle, []
            for environment in idle:
                pool.all.discard(environment)
        for environment in idle:
            environment.close()

    def close(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            with pool.condition:
                environments, pool.idle = list(pool.all), []
                pool.all.clear()
                pool.condition.notify_all()
            for environment in environments:
                # Only the signal: a busy environment's pipes belong to the thread reading them, which sees
                # the end of the stream and cleans up (closing them here could hand it a reused descriptor).
                if environment.process.poll() is None:
                    environment.process.kill()


class InProcessRuntime(Runtime):
    """All handlers in this process, sharing its environment and credentials: only for the lifecycle cost
    bench, which counts every SDK call a handler makes with botocore hooks in this process. Everything else,
    tests included, runs on :class:`ProcessRuntime`."""

    def __init__(self, specs: dict[str, FunctionSpec]) -> None:
        super().__init__(specs)
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._import_lock = threading.Lock()

    def _handler(self, spec: FunctionSpec) -> Callable[[Any, Any], Any]:
        import importlib

        from infra.local.template import ROOT

        with self._import_lock:
            if spec.logical_id not in self._handlers:
                module_file, attr = spec.handler.rsplit('.', 1)
                package = '.'.join(spec.code_dir.relative_to(ROOT).parts)
                self._handlers[spec.logical_id] = getattr(importlib.import_module(f'{package}.{module_file}'), attr)
            return self._handlers[spec.logical_id]

    def invoke(self, function_name_or_arn: str, event: Any, *, source: str) -> Any:
        function = self.function(function_name_or_arn)
        record = Invocation(function=function.spec.logical_id, source=source, started=time.time())
        record.message_ids = _message_ids(event)
        context = LambdaContext(
            function_name=function.name,
            memory_limit_in_mb=function.memory_mb,
            invoked_function_arn=function.arn,
            deadline_ms=time.time() * 1000 + function.timeout * 1000,
        )
        try:
            return self._handler(function.spec)(event, context)
        except Exception as exc:
            record.error = f'{type(exc).__name__}: {exc}'
            raise FunctionError({'errorMessage': str(exc), 'errorType': type(exc).__name__}) from exc
        finally:
            record.duration_ms = (time.time() - record.started) * 1000
            self.record(record)


def _report(record: Invocation, function: DeployedFunction) -> str:
    """Lambda's REPORT line."""
    line = (
        f'REPORT {function.spec.logical_id} RequestId: {record.request_id}\tDuration: {record.duration_ms:.2f} ms\t'
        f'Memory Size: {function.memory_mb} MB\tMax Memory Used: {record.max_memory_mb:.0f} MB'
    )
    if record.init_ms is not None:
        line += f'\tInit Duration: {record.init_ms:.2f} ms'
    if record.error:
        line += f'\tError: {record.error[:200]}'
    return line


def _timed_out(request_id: str, timeout: float) -> dict[str, Any]:
    # No errorType, as Lambda answers a timeout: Step Functions reports it as Lambda.Unknown.
    stamp = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())
    return {'errorMessage': f'{stamp}Z {request_id} Task timed out after {timeout:.2f} seconds'}


def _out_of_memory(request_id: str) -> dict[str, Any]:
    return {
        'errorType': 'Runtime.OutOfMemory',
        'errorMessage': f'RequestId: {request_id} Error: Runtime exited with error: signal: killed',
    }


def _runtime_exit(request_id: str) -> dict[str, Any]:
    return {
        'errorType': 'Runtime.ExitError',
        'errorMessage': f'RequestId: {request_id} Error: Runtime exited without providing a reason',
    }


def _rss_mb(pid: int) -> float:
    try:
        with Path(f'/proc/{pid}/status').open(encoding='ascii') as status:
            for line in status:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _message_ids(event: Any) -> tuple[str, ...]:
    if isinstance(event, dict) and isinstance(event.get('Records'), list):
        return tuple(str(r.get('messageId')) for r in event['Records'] if isinstance(r, dict) and 'messageId' in r)
    return ()


def _source_of(event: Any) -> str:
    if isinstance(event, dict):
        if 'Records' in event and event['Records'] and isinstance(event['Records'][0], dict):
            return str(event['Records'][0].get('eventSource', 'records'))
        if event.get('version') == '2.0' and 'routeKey' in event:
            return 'apigateway'
        if event.get('source') == 'aws.events':
            return 'schedule'
    return 'invoke'
