"""Run the template's Lambda handlers in this process, as moto's Lambda invokes them.

moto's Docker-free Lambda backend answers every ``Invoke`` with a canned payload. The offline stack
replaces that one method, so every invocation (from the gateway, the state machine, an SQS poller or
a schedule) runs the real handler that the template names (``CodeUri`` + ``Handler``), with the
function's own environment, and returns what it returned, or a Lambda-style function error.
"""

from __future__ import annotations

import importlib
import json
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from infra.local.template import ROOT, FunctionSpec


@dataclass
class Invocation:
    """One handler run, kept for tests and for the dev console."""

    function: str
    source: str
    started: float
    duration_ms: float = 0.0
    error: str | None = None
    message_ids: tuple[str, ...] = ()  # the SQS messages of a batch, to trace a message to its consumer


@dataclass
class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

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
    """The handler raised; carries the Lambda-style error payload."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__(payload.get('errorMessage'))
        self.payload = payload


class InProcessRuntime:
    """Maps deployed function names to the template's handlers and runs them."""

    def __init__(self, specs: dict[str, FunctionSpec]) -> None:
        self.specs = specs
        self._by_physical_name: dict[str, tuple[FunctionSpec, dict[str, Any]]] = {}
        self._handlers: dict[str, Callable[[Any, Any], Any]] = {}
        self._import_lock = threading.Lock()
        self.invocations: list[Invocation] = []
        self._invocations_lock = threading.Lock()

    def register(self, logical_id: str, physical_name: str, configuration: dict[str, Any]) -> None:
        self._by_physical_name[physical_name] = (self.specs[logical_id], configuration)

    def logical_id(self, function_name_or_arn: str) -> str:
        return self._lookup(function_name_or_arn)[0].logical_id

    def _lookup(self, function_name_or_arn: str) -> tuple[FunctionSpec, dict[str, Any]]:
        name = function_name_or_arn.split(':function:')[-1].split(':')[0]
        return self._by_physical_name[name]

    def handler(self, spec: FunctionSpec) -> Callable[[Any, Any], Any]:
        """Import the handler module once, as Lambda imports it once per execution environment."""
        with self._import_lock:
            if spec.logical_id not in self._handlers:
                module_file, attr = spec.handler.rsplit('.', 1)
                package = '.'.join(spec.code_dir.relative_to(ROOT).parts)
                module = importlib.import_module(f'{package}.{module_file}')
                self._handlers[spec.logical_id] = getattr(module, attr)
            return self._handlers[spec.logical_id]

    def invoke(self, function_name_or_arn: str, event: Any, *, source: str) -> Any:
        """Run the function's handler on ``event``; raise :class:`FunctionError` if it fails."""
        spec, configuration = self._lookup(function_name_or_arn)
        record = Invocation(
            function=spec.logical_id, source=source, started=time.time(), message_ids=_message_ids(event)
        )
        context = LambdaContext(
            function_name=configuration['FunctionName'],
            memory_limit_in_mb=int(configuration.get('MemorySize', 512)),
            invoked_function_arn=configuration['FunctionArn'],
            deadline_ms=time.time() * 1000 + int(configuration.get('Timeout', 15)) * 1000,
        )
        try:
            return self.handler(spec)(event, context)
        except Exception as exc:
            record.error = f'{type(exc).__name__}: {exc}'
            raise FunctionError(
                {
                    'errorMessage': str(exc),
                    'errorType': type(exc).__name__,
                    'stackTrace': traceback.format_exception(exc)[-5:],
                }
            ) from exc
        finally:
            record.duration_ms = (time.time() - record.started) * 1000
            with self._invocations_lock:
                self.invocations.append(record)

    def invoke_bytes(
        self, function_name_or_arn: str, body: bytes | str | None, response_headers: dict[str, Any]
    ) -> bytes:
        """moto's ``Invoke`` contract: JSON bytes in, JSON bytes out, errors flagged in a header."""
        event = json.loads(body) if body else {}
        try:
            result = self.invoke(function_name_or_arn, event, source=_source_of(event))
        except FunctionError as exc:
            response_headers['x-amz-function-error'] = 'Unhandled'
            return json.dumps(exc.payload).encode()
        return json.dumps(result).encode()


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
