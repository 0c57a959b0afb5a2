"""One Lambda execution environment: a process that imports one function's handler and runs its invocations.

Started by :mod:`infra.local.runtime` as ``python infra/local/worker.py FDS LAYERS STARTED`` with only the
environment the template gives the function (plus Lambda's reserved variables and its role's credentials), so
nothing a handler caches, reads from ``os.environ`` or imports is shared with another function. The import path is
Lambda's: the function's code directory (``LAMBDA_TASK_ROOT``) first, then the layers (``/opt/python``).

This file runs before the handler's imports and uses the standard library only. It talks to its parent over
two inherited pipes (their descriptors are the first argument), one JSON document per line, so that whatever the
handler prints goes to stdout/stderr like CloudWatch Logs:

- worker -> parent, once: ``{"ready": true, "init_ms": ...}`` or ``{"ready": false, "error": {...}}``
- parent -> worker: ``{"event": ..., "context": {...}}``
- worker -> parent: ``{"result": ...}`` or ``{"error": {...}}``, with ``max_rss_mb``
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import sys
import time
import traceback
from typing import Any


class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.function_name: str = values['function_name']
        self.function_version: str = values.get('function_version', '$LATEST')
        self.invoked_function_arn: str = values['invoked_function_arn']
        self.memory_limit_in_mb: int = int(values['memory_limit_in_mb'])
        self.aws_request_id: str = values['aws_request_id']
        self.log_group_name: str = values['log_group_name']
        self.log_stream_name: str = values['log_stream_name']
        self._deadline_ms: float = float(values['deadline_ms'])

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


def _error(exc: BaseException) -> dict[str, Any]:
    """Lambda's error payload for an exception a handler raised."""
    return {
        'errorMessage': str(exc),
        'errorType': type(exc).__name__,
        'requestId': '',
        'stackTrace': traceback.format_exception(exc)[-5:],
    }


def _max_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited from the parent)."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:  # noqa: PTH123 - stdlib-only bootstrap
            for line in status:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    fds, layers, started_at = sys.argv[1:4]  # arguments, so that the environment is the function's alone
    started = float(started_at)
    read_fd, write_fd = (int(fd) for fd in fds.split(','))
    requests = os.fdopen(read_fd, 'r', encoding='utf-8')
    responses = os.fdopen(write_fd, 'w', encoding='utf-8')

    def send(message: dict[str, Any]) -> None:
        responses.write(json.dumps(message, default=str) + '\n')
        responses.flush()

    # Lambda's import path: the task root, then the layers; never this file's folder (infra is not deployed).
    sys.path[0:1] = [os.environ['LAMBDA_TASK_ROOT'], *layers.split(os.pathsep)]
    module_name, attribute = os.environ['_HANDLER'].rsplit('.', 1)
    try:
        handler = getattr(importlib.import_module(module_name), attribute)
    except BaseException as exc:  # an import error is Lambda's Runtime.ImportModuleError
        send({'ready': False, 'error': {**_error(exc), 'errorType': 'Runtime.ImportModuleError'}})
        return 1
    send({'ready': True, 'init_ms': (time.time() - started) * 1000})

    for line in requests:
        request = json.loads(line)
        request_id = request['context']['aws_request_id']
        try:
            result = handler(request['event'], LambdaContext(request['context']))
        except Exception as exc:
            reply: dict[str, Any] = {'error': {**_error(exc), 'requestId': request_id}}
        else:
            try:
                reply = {'result': json.loads(json.dumps(result))}
            except (TypeError, ValueError) as exc:  # as Lambda answers a result it cannot serialize
                reply = {
                    'error': {
                        'errorMessage': f'Unable to marshal response: {exc}',
                        'errorType': 'Runtime.MarshalError',
                        'requestId': request_id,
                        'stackTrace': [],
                    }
                }
        reply['max_rss_mb'] = _max_rss_mb()
        sys.stdout.flush()
        sys.stderr.flush()
        send(reply)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
