"""What one generation task costs on AWS, and how fast it is, measured on the offline stack.

The real template runs offline (moto, in this process). A signed-in user with credits runs tasks one at a
time on two paths: the webhook path (``mock/image``: the provider sends a webhook) and the polling path
(``mock/no-webhook``: the wait times out and a poll finds the result). For each task it counts:

- Step Functions state transitions, from ``GetExecutionHistory`` of the execution named after the task:
  every ``*StateEntered`` event plus every retry of a Task state (AWS: "each time a step of your workflow
  is executed ... including retries");
- Lambda invocations and their in-process durations, from the runtime's ``invocations`` list (diffed
  around each task), the API calls that create the task and read it once included;
- DynamoDB read and write request units, from every boto3 call in this process (botocore event
  handlers on the default session), sized the way DynamoDB bills them from the items moto holds before
  and after each call (moto's own ``ConsumedCapacity`` is a constant 0.5 / 1.0 per call, not usable);
- SQS and S3 requests by operation, the Lambda event source mapping's requests kept apart;
- the time from the provider's completion (``completed_at`` of the mock provider's prediction) to
  ``succeeded`` visible in ``GET /v1/tasks/{id}``, polled every ~20 ms (those probe reads are not costed).

The counts become USD per 1,000 tasks with AWS's published us-east-1 prices (constants below), next to a
model of a plain 10 s fixed-interval polling design for a 2-minute task.

    python -m infra.bench.lifecycle_bench [--tasks 5]
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# ================================================================== prices
#: us-east-1 list prices, taken on this date from the AWS pricing pages below (and checked against
#: /work/shared/reference/providers-and-lifecycle.md, section 3). Free tiers are ignored.
PRICES_AS_OF = '2026-11-22'


@dataclass(frozen=True)
class Prices:
    # https://aws.amazon.com/step-functions/pricing/ - Standard workflows: $0.025 per 1,000 state transitions
    sfn_transition: float = 0.025 / 1_000
    # https://aws.amazon.com/lambda/pricing/ - $0.20 per 1M requests; duration per GB-second (first tier)
    lambda_request: float = 0.20 / 1_000_000
    lambda_gb_second_arm64: float = 0.0000133334
    lambda_gb_second_x86: float = 0.0000166667
    # https://aws.amazon.com/dynamodb/pricing/on-demand/ - on-demand, after the 2024-11-01 price cut
    dynamodb_write_unit: float = 0.625 / 1_000_000
    dynamodb_read_unit: float = 0.125 / 1_000_000
    # https://aws.amazon.com/sqs/pricing/ - standard queues, $0.40 per 1M requests (each 64 KB chunk = 1)
    sqs_request: float = 0.40 / 1_000_000
    # https://aws.amazon.com/s3/pricing/ - S3 Standard: PUT, COPY, POST, LIST $0.005 per 1,000;
    # GET, SELECT and all other requests $0.0004 per 1,000 (DELETE is free)
    s3_put_request: float = 0.005 / 1_000
    s3_get_request: float = 0.0004 / 1_000
    # https://aws.amazon.com/api-gateway/pricing/ - HTTP APIs, $1.00 per 1M requests (first 300M)
    http_api_request: float = 1.00 / 1_000_000


PRICES = Prices()

# ================================================================== DynamoDB units (pure)
WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096


def number_size(text: str) -> int:
    """Bytes of a DynamoDB number: about 1 byte per 2 significant digits, plus 1."""
    try:
        significant = len(Decimal(text).normalize().as_tuple().digits)
    except InvalidOperation:
        significant = sum(c.isdigit() for c in text)
    significant = max(1, significant)
    return math.ceil(significant / 2) + 1


def _binary_size(raw: Any) -> int:
    if isinstance(raw, bytes | bytearray | memoryview):
        return len(raw)
    return len(base64.b64decode(raw))  # the JSON wire form (and moto's to_json) carries base64 text


def value_size(value: Mapping[str, Any]) -> int:
    """Bytes of one typed attribute value (``{"S": "..."}``), by DynamoDB's item size rules."""
    ((kind, raw),) = value.items()
    if kind == 'S':
        return len(str(raw).encode())
    if kind == 'N':
        return number_size(str(raw))
    if kind == 'B':
        return _binary_size(raw)
    if kind in ('BOOL', 'NULL'):
        return 1
    if kind == 'SS':
        return sum(len(str(s).encode()) for s in raw)
    if kind == 'NS':
        return sum(number_size(str(n)) for n in raw)
    if kind == 'BS':
        return sum(_binary_size(b) for b in raw)
    if kind == 'L':  # 3 bytes for the list, 1 byte per element
        return 3 + sum(1 + value_size(v) for v in raw)
    if kind == 'M':  # 3 bytes for the map, 1 byte per element, plus the element names
        return 3 + sum(1 + len(k.encode()) + value_size(v) for k, v in raw.items())
    raise ValueError(f'unknown DynamoDB type {kind!r}')


def item_size(item: Mapping[str, Any] | None) -> int:
    """Bytes of an item: attribute names (UTF-8) plus values. A missing item is 0 bytes."""
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def write_units(size: int, *, transactional: bool = False) -> int:
    """Write request units of one item write: 1 per started KB (at least 1), doubled in a transaction."""
    units = max(1, math.ceil(size / WRITE_UNIT_BYTES))
    return units * 2 if transactional else units


def read_units(size: int, *, consistent: bool, transactional: bool = False) -> float:
    """Read request units of one read of ``size`` bytes: 1 per started 4 KB strongly consistent (at least 1),
    half that eventually consistent, twice that in a transaction."""
    units = float(max(1, math.ceil(size / READ_UNIT_BYTES)))
    if transactional:
        return units * 2
    return units if consistent else units / 2


@dataclass(frozen=True)
class IndexSpec:
    """A secondary index as far as billing is concerned: its key attributes and what it projects."""

    name: str
    key_attributes: tuple[str, ...]
    table_keys: tuple[str, ...]
    projection: str = 'ALL'  # ALL, KEYS_ONLY or INCLUDE
    non_key_attributes: tuple[str, ...] = ()

    def entry(self, item: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The item's entry in this index, or None when the item lacks an index key (sparse index)."""
        if not item or any(k not in item for k in self.key_attributes):
            return None
        if self.projection == 'ALL':
            return dict(item)
        keep = set(self.key_attributes) | set(self.table_keys)
        if self.projection == 'INCLUDE':
            keep |= set(self.non_key_attributes)
        return {k: v for k, v in item.items() if k in keep}


def index_write_units(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, index: IndexSpec) -> int:
    """Write units an item write costs in one secondary index (AWS: an unchanged entry costs nothing, a new or
    deleted entry one write, an entry whose index key changed two writes: delete the old, put the new)."""
    old, new = index.entry(before), index.entry(after)
    if old == new:
        return 0
    if old is None:
        return write_units(item_size(new))
    if new is None:
        return write_units(item_size(old))
    if any(old[k] != new[k] for k in index.key_attributes):
        return write_units(item_size(old)) + write_units(item_size(new))
    return write_units(max(item_size(old), item_size(new)))


@dataclass(frozen=True)
class WriteCost:
    table: int
    indexes: int

    @property
    def total(self) -> int:
        return self.table + self.indexes


def item_write_cost(
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    indexes: Iterable[IndexSpec] = (),
    *,
    transactional: bool = False,
    condition_check: bool = False,
) -> WriteCost:
    """What one item write is billed: the larger of the item before and after (a failed condition leaves them
    equal and still costs the units), doubled in a transaction; plus the index writes (not doubled: assumed).
    A transaction's ConditionCheck is billed as a transactional write of the checked item, no index writes."""
    table = write_units(max(item_size(before), item_size(after)), transactional=transactional)
    if condition_check:
        return WriteCost(table, 0)
    return WriteCost(table, sum(index_write_units(before, after, index) for index in indexes))


# ================================================================== Step Functions transitions (pure)


@dataclass(frozen=True)
class Transitions:
    entered: Counter[str]
    retries: int

    @property
    def billed(self) -> int:
        return sum(self.entered.values()) + self.retries


def count_transitions(events: Iterable[Mapping[str, Any]]) -> Transitions:
    """State transitions as AWS bills them: each state entered, plus each retry of a Task state (a second or
    later ``TaskScheduled`` / ``LambdaFunctionScheduled`` within one entry of the state)."""
    entered: Counter[str] = Counter()
    retries = 0
    scheduled_in_state = 0
    for event in events:
        kind = str(event.get('type', ''))
        if kind.endswith('StateEntered'):
            details = event.get('stateEnteredEventDetails') or {}
            entered[str(details.get('name', kind))] += 1
            scheduled_in_state = 0
        elif kind in ('TaskScheduled', 'LambdaFunctionScheduled', 'ActivityScheduled'):
            scheduled_in_state += 1
            if scheduled_in_state > 1:
                retries += 1
    return Transitions(entered, retries)


# ================================================================== usage and prices (pure)


@dataclass
class Usage:
    """Billable quantities of one task (or an average of several)."""

    transitions: float = 0.0
    lambda_requests: float = 0.0
    lambda_gb_seconds: float = 0.0
    read_units: float = 0.0
    write_units: float = 0.0
    sqs_requests: float = 0.0
    s3_put_requests: float = 0.0
    s3_get_requests: float = 0.0
    api_requests: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def scaled(self, factor: float) -> Usage:
        return Usage(**{f.name: getattr(self, f.name) * factor for f in fields(self)})


def total(usages: Iterable[Usage]) -> Usage:
    out = Usage()
    for usage in usages:
        out = out + usage
    return out


def average(usages: list[Usage]) -> Usage:
    return total(usages).scaled(1 / len(usages)) if usages else Usage()


#: (label, Usage field, price of one unit) for every line of the cost table, in order.
def cost_lines(prices: Prices = PRICES, *, arm64: bool = True) -> list[tuple[str, str, float]]:
    gb_second = prices.lambda_gb_second_arm64 if arm64 else prices.lambda_gb_second_x86
    return [
        ('Step Functions state transitions', 'transitions', prices.sfn_transition),
        ('Lambda requests', 'lambda_requests', prices.lambda_request),
        (f'Lambda GB-seconds ({"arm64" if arm64 else "x86"})', 'lambda_gb_seconds', gb_second),
        ('DynamoDB read request units', 'read_units', prices.dynamodb_read_unit),
        ('DynamoDB write request units', 'write_units', prices.dynamodb_write_unit),
        ('SQS requests', 'sqs_requests', prices.sqs_request),
        ('S3 PUT/COPY/POST/LIST requests', 's3_put_requests', prices.s3_put_request),
        ('S3 GET/HEAD/other requests', 's3_get_requests', prices.s3_get_request),
        ('API Gateway HTTP API requests', 'api_requests', prices.http_api_request),
    ]


def usd_per_1000(usage: Usage, prices: Prices = PRICES, *, arm64: bool = True) -> dict[str, float]:
    """USD per 1,000 tasks, by line (keyed by Usage field) and ``total``."""
    out = {name: getattr(usage, name) * price * 1000 for _, name, price in cost_lines(prices, arm64=arm64)}
    out['total'] = sum(out.values())
    return out


def gb_seconds(memory_mb: int, duration_ms: float) -> float:
    """Lambda's billed duration: rounded up to the millisecond, times the memory in GB."""
    return memory_mb / 1024 * math.ceil(duration_ms) / 1000


@dataclass(frozen=True)
class PollingModel:
    """A plain fixed-interval poller: Submit -> (Wait -> Poll -> Choice) x polls -> Settle -> Done."""

    task_seconds: int = 120
    interval_seconds: int = 10
    transitions_per_poll: int = 3  # Wait, Poll (Task), Choice
    poll_read_units: float = 1.0  # read the task item (strongly consistent)
    poll_write_units: float = 1.0  # write its status / progress back
    poll_gb_seconds: float = 0.0  # one poll Lambda invocation

    @property
    def polls(self) -> int:
        return math.ceil(self.task_seconds / self.interval_seconds)

    def usage(self, fixed: Usage) -> Usage:
        """``fixed`` (create, submit, settle, read) plus the polls."""
        per_poll = Usage(
            transitions=self.transitions_per_poll,
            lambda_requests=1,
            lambda_gb_seconds=self.poll_gb_seconds,
            read_units=self.poll_read_units,
            write_units=self.poll_write_units,
        )
        return fixed + per_poll.scaled(self.polls)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between closest ranks."""
    if not values:
        return float('nan')
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


S3_PUT_CLASS = frozenset(
    {
        'PutObject',
        'CopyObject',
        'PostObject',
        'CreateMultipartUpload',
        'UploadPart',
        'UploadPartCopy',
        'CompleteMultipartUpload',
        'ListObjects',
        'ListObjectsV2',
        'ListObjectVersions',
        'ListBuckets',
        'ListMultipartUploads',
        'ListParts',
    }
)
S3_FREE = frozenset({'DeleteObject', 'DeleteObjects', 'AbortMultipartUpload'})


def s3_request_class(operation: str) -> str | None:
    """``put`` or ``get`` (S3's two request price tiers), None for free requests."""
    if operation in S3_FREE:
        return None
    return 'put' if operation in S3_PUT_CLASS else 'get'


# ================================================================== recording (the stack's process)


@dataclass
class ApiCall:
    """One AWS SDK call made in this process, with where it came from and what DynamoDB bills for it."""

    service: str
    operation: str
    origin: str  # a function's logical id, 'esm' (SQS poller), 'bench' (this script), 'platform'
    source: str = ''  # the invocation's source (apigateway, invoke, aws:sqs, schedule)
    probe: bool = False
    read_units: float = 0.0
    write_units: float = 0.0
    index_write_units: float = 0.0
    messages: int = 0  # ReceiveMessage: messages returned
    ok: bool = True
    detail: str = ''  # DynamoDB: tables and item sizes the units were computed from


@dataclass
class _Context:
    function: str
    source: str
    probe: bool


PROBE_HEADER = 'x-bench-probe'
_BILLED_DYNAMODB_ERRORS = {'ConditionalCheckFailedException', 'TransactionCanceledException'}


class MotoItems:
    """Reads items straight from moto's in-process DynamoDB backend (no request, nothing billed)."""

    def __init__(self, account: str = '123456789012', region: str = 'us-east-1') -> None:
        self.account = account
        self.region = region
        self._specs: dict[str, tuple[tuple[str, ...], tuple[IndexSpec, ...]]] = {}

    def _table(self, name: str) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        return dynamodb_backends[self.account][self.region].get_table(name)

    def spec(self, name: str) -> tuple[tuple[str, ...], tuple[IndexSpec, ...]]:
        """(table key attributes, indexes) of a table."""
        if name not in self._specs:
            table = self._table(name)
            keys = tuple(k for k in (table.hash_key_attr, table.range_key_attr) if k)
            indexes = tuple(
                IndexSpec(
                    name=index.name,
                    key_attributes=tuple(k['AttributeName'] for k in index.schema),
                    table_keys=keys,
                    projection=(index.projection or {}).get('ProjectionType', 'ALL'),
                    non_key_attributes=tuple((index.projection or {}).get('NonKeyAttributes', ())),
                )
                for index in [*table.indexes, *table.global_indexes]
            )
            self._specs[name] = (keys, indexes)
        return self._specs[name]

    def key_of(self, table: str, item: Mapping[str, Any]) -> dict[str, Any] | None:
        keys, _ = self.spec(table)
        if any(k not in item for k in keys):
            return None
        return {k: item[k] for k in keys}

    def get(self, table: str, key: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if not key:
            return None
        from moto.dynamodb.models.dynamo_type import DynamoType

        keys, _ = self.spec(table)
        for _ in range(3):  # another thread may be changing the item under us
            try:
                found = self._table(table).get_item(
                    DynamoType(_plain(key[keys[0]])), DynamoType(_plain(key[keys[1]])) if len(keys) > 1 else None
                )
                return None if found is None else dict(found.to_json()['Attributes'])
            except RuntimeError:
                continue
            except Exception:
                return None
        return None


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    """A typed key value as moto's backend wants it (binary as base64 text)."""
    ((kind, raw),) = value.items()
    if kind == 'B' and isinstance(raw, bytes | bytearray):
        return {kind: base64.b64encode(raw).decode()}
    return {kind: raw}


@dataclass
class _Target:
    table: str
    key: dict[str, Any] | None
    transactional: bool = False
    condition_check: bool = False
    before: dict[str, Any] | None = None


class Recorder:
    """Records every boto3 call of this process (botocore events on the default session) and every Lambda
    invocation (a wrapper around the runtime's ``invoke``), attributing each call to the function running it."""

    def __init__(self, items: MotoItems | None = None) -> None:
        self.items = items or MotoItems()
        self.calls: list[ApiCall] = []
        self.probe_invocations: set[int] = set()
        self._probe_refs: list[Any] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._active: dict[int, _Context] = {}
        self._handlers: list[tuple[str, Callable[..., Any]]] = []
        self._events: Any = None
        #: Physical table name -> the template's logical id, for the call details.
        self.table_names: dict[str, str] = {}

    def _name(self, table: str) -> str:
        return self.table_names.get(table, table)

    # ------------------------------------------------------------------ wiring
    def install(self, events: Any) -> None:
        """Register on a botocore event emitter (before any client is created: clients copy the emitter)."""
        self._events = events
        self._handlers = [
            ('before-parameter-build', self._before_parameter_build),
            ('before-call', self._before_call),
            ('after-call', self._after_call),
        ]
        for name, handler in self._handlers:
            events.register(name, handler, unique_id=f'lifecycle-bench-{name}')

    def uninstall(self) -> None:
        if self._events is not None:
            for name, handler in self._handlers:
                self._events.unregister(name, handler, unique_id=f'lifecycle-bench-{name}')
            self._events = None

    def wrap(self, runtime: Any) -> None:
        """Run every invocation under a context naming its function, so its SDK calls are attributed to it."""
        original = runtime.invoke
        recorder = self

        def invoke(function_name_or_arn: str, event: Any, *, source: str) -> Any:
            function = runtime.logical_id(function_name_or_arn)
            headers = event.get('headers') if isinstance(event, dict) else None
            probe = bool(isinstance(headers, dict) and headers.get(PROBE_HEADER))
            context = _Context(function, source, probe)
            previous = getattr(recorder._local, 'context', None)
            recorder._local.context = context
            thread = threading.get_ident()
            with recorder._lock:
                recorder._active[thread] = context
            started = time.time()
            try:
                return original(function_name_or_arn, event, source=source)
            finally:
                recorder._local.context = previous
                with recorder._lock:
                    if previous is None:
                        recorder._active.pop(thread, None)
                    else:
                        recorder._active[thread] = previous
                if probe:
                    recorder._mark_probe(runtime, function, started)

        runtime.invoke = invoke

    def _mark_probe(self, runtime: Any, function: str, started: float) -> None:
        for record in reversed(runtime.invocations[-50:]):
            if record.function == function and record.started >= started and id(record) not in self.probe_invocations:
                with self._lock:
                    self.probe_invocations.add(id(record))
                    self._probe_refs.append(record)  # keep it alive: ids stay unique
                return

    def _origin(self) -> _Context | str:
        context: _Context | None = getattr(self._local, 'context', None)
        if context is not None:
            return context
        thread = threading.current_thread()
        if thread is threading.main_thread():
            return 'bench'
        if thread.name.startswith('sqs-'):
            return 'esm'
        if thread.name.startswith('ThreadPoolExecutor'):
            # boto3's S3 transfer manager uploads from its own threads: the one function running owns them.
            with self._lock:
                running = [c for c in self._active.values() if not c.probe and c.source != 'schedule']
            if len(running) == 1:
                return running[0]
        return 'platform'

    # ------------------------------------------------------------------ botocore handlers
    def _before_parameter_build(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context['bench_params'] = params

    def _before_call(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        if model.service_model.service_name != 'dynamodb':
            return
        try:
            targets = self._write_targets(model.name, context.get('bench_params') or {})
            for target in targets:
                target.before = self.items.get(target.table, target.key)
            context['bench_targets'] = targets
        except Exception:  # never break the call being measured
            context['bench_targets'] = []

    def _after_call(
        self, http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        origin = self._origin()
        service = model.service_model.service_name
        status = getattr(http_response, 'status_code', 200)
        call = ApiCall(service=service, operation=model.name, origin='')
        if isinstance(origin, _Context):
            call.origin, call.source, call.probe = origin.function, origin.source, origin.probe
        else:
            call.origin = origin
        call.ok = status < 300
        if service == 'sqs' and model.name == 'ReceiveMessage':
            call.messages = len(parsed.get('Messages') or [])
        if service == 'dynamodb':
            code = (parsed.get('Error') or {}).get('Code', '')
            if call.ok or code in _BILLED_DYNAMODB_ERRORS:
                try:
                    self._dynamodb_units(call, context, parsed)
                except Exception as exc:  # pragma: no cover - reported, never fatal
                    sys.stderr.write(f'lifecycle bench: could not size {model.name}: {exc!r}\n')
        with self._lock:
            self.calls.append(call)

    # ------------------------------------------------------------------ DynamoDB sizing
    def _write_targets(self, operation: str, params: Mapping[str, Any]) -> list[_Target]:
        items = self.items
        if operation == 'PutItem':
            return [_Target(params['TableName'], items.key_of(params['TableName'], params['Item']))]
        if operation in ('UpdateItem', 'DeleteItem'):
            return [_Target(params['TableName'], dict(params['Key']))]
        if operation == 'TransactWriteItems':
            targets = []
            for entry in params.get('TransactItems', []):
                ((kind, request),) = entry.items()
                table = request['TableName']
                key = items.key_of(table, request['Item']) if kind == 'Put' else dict(request['Key'])
                targets.append(_Target(table, key, transactional=True, condition_check=kind == 'ConditionCheck'))
            return targets
        if operation == 'BatchWriteItem':
            targets = []
            for table, requests in params.get('RequestItems', {}).items():
                for request in requests:
                    if 'PutRequest' in request:
                        targets.append(_Target(table, items.key_of(table, request['PutRequest']['Item'])))
                    else:
                        targets.append(_Target(table, dict(request['DeleteRequest']['Key'])))
            return targets
        return []

    def _dynamodb_units(self, call: ApiCall, context: Mapping[str, Any], parsed: Mapping[str, Any]) -> None:
        params: Mapping[str, Any] = context.get('bench_params') or {}
        operation = call.operation
        for target in context.get('bench_targets') or []:
            after = self.items.get(target.table, target.key)
            _, indexes = self.items.spec(target.table)
            cost = item_write_cost(
                target.before,
                after,
                indexes,
                transactional=target.transactional,
                condition_check=target.condition_check,
            )
            call.write_units += cost.total
            call.index_write_units += cost.indexes
            kind = 'check' if target.condition_check else 'tx' if target.transactional else 'write'
            call.detail += (
                f' {kind} {self._name(target.table)} {item_size(target.before)}->{item_size(after)} B'
                f' = {cost.table}+{cost.indexes} idx WRU;'
            )
        if operation == 'GetItem':
            item = self.items.get(params['TableName'], params['Key'])
            call.read_units = read_units(item_size(item), consistent=bool(params.get('ConsistentRead')))
            consistency = 'strong' if params.get('ConsistentRead') else 'eventual'
            call.detail = f' {self._name(params["TableName"])} {item_size(item)} B {consistency}'
        elif operation == 'BatchGetItem':
            for table, request in params.get('RequestItems', {}).items():
                for key in request.get('Keys', []):
                    size = item_size(self.items.get(table, key))
                    call.read_units += read_units(size, consistent=bool(request.get('ConsistentRead')))
        elif operation == 'TransactGetItems':
            for entry in params.get('TransactItems', []):
                request = entry['Get']
                size = item_size(self.items.get(request['TableName'], request['Key']))
                call.read_units += read_units(size, consistent=True, transactional=True)
        elif operation in ('Query', 'Scan'):
            table = params['TableName']
            sizes = []
            for returned in parsed.get('Items') or []:
                key = self.items.key_of(table, returned)
                full = self.items.get(table, key) if key else None
                sizes.append(item_size(full or returned))  # billed on whole items, not the projection
            filtered_out = max(0, int(parsed.get('ScannedCount', len(sizes))) - len(sizes))
            if filtered_out:  # items read and then dropped by a FilterExpression are billed too
                sizes.extend([int(statistics.mean(sizes)) if sizes else 0] * filtered_out)
            call.read_units = read_units(sum(sizes), consistent=bool(params.get('ConsistentRead')))
            index = f'/{params["IndexName"]}' if params.get('IndexName') else ''
            call.detail = f' {self._name(table)}{index} {len(sizes)} items {sum(sizes)} B'


# ================================================================== the run


FINAL = {'succeeded', 'failed', 'canceled', 'expired'}
PATHS = (('webhook', 'mock/image'), ('polling', 'mock/no-webhook'))
#: Functions that make up the wait (webhook wait, poll, webhook): what a fixed-interval poller replaces.
WAIT_FUNCTIONS = ('AwaitProviderFunction', 'PollTaskFunction', 'ProviderWebhookFunction')
#: States a fixed-interval polling machine shares with ours (its loop states are modelled).
FIXED_STATES = ('Submit', 'Settle', 'Release', 'Done', 'Unfinished')
ESM = 'SQS event source mapping'
CREDITS_PER_TASK = 4  # mock/image and mock/no-webhook with one image


@dataclass
class TaskRun:
    task_id: str
    path: str
    status: str
    transitions: Transitions
    by_function: dict[str, Usage]
    invocations: Counter[str]
    durations_ms: dict[str, list[float]]
    operations: Counter[str]  # 'sqs:SendMessage' ... (billed calls only)
    seconds_to_succeeded: float
    task_item_bytes: int
    idle_receives: int = 0
    unattributed: Counter[str] = field(default_factory=Counter)
    calls: list[tuple[str, ApiCall]] = field(default_factory=list)  # (owner, call), the billed ones

    @property
    def usage(self) -> Usage:
        return total(self.by_function.values()) + Usage(transitions=self.transitions.billed)


@dataclass
class PathResult:
    path: str
    model: str
    runs: list[TaskRun]

    @property
    def usage(self) -> Usage:
        return average([r.usage for r in self.runs])

    def by_function(self) -> dict[str, Usage]:
        names = sorted({n for r in self.runs for n in r.by_function})
        return {n: average([r.by_function.get(n, Usage()) for r in self.runs]) for n in names}

    def states(self) -> dict[str, float]:
        names = sorted({n for r in self.runs for n in r.transitions.entered})
        out = {n: statistics.mean(r.transitions.entered.get(n, 0) for r in self.runs) for n in names}
        out['(retries)'] = statistics.mean(r.transitions.retries for r in self.runs)
        return out

    def latencies(self) -> list[float]:
        return [r.seconds_to_succeeded for r in self.runs]


class Bench:
    def __init__(self, server: Any, recorder: Recorder) -> None:
        import httpx

        self.server = server
        self.stack = server.stack
        self.recorder = recorder
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.sfn = self.stack.client('stepfunctions')
        lambda_ = self.stack.client('lambda')
        self.memory_mb: dict[str, int] = {}
        for logical_id in self.stack.runtime.specs:
            configuration = lambda_.get_function_configuration(FunctionName=self.stack.physical_id(logical_id))
            self.memory_mb[logical_id] = int(configuration.get('MemorySize') or 128)
        self.tasks_table = self.stack.physical_id('TasksTable')
        recorder.table_names.update({physical: logical for logical, physical in self.stack.resources.items()})
        self.arm64 = _arm64(self.stack.template)
        self.execution_prefix = self.stack.outputs['TaskStateMachineArn'].replace(':stateMachine:', ':execution:')
        self.esm_queues = len(lambda_.list_event_source_mappings()['EventSourceMappings'])
        self.token = ''

    def sign_in_with_credits(self, credits: int) -> None:
        response = self.http.post('/v1/auth/device', json={'device_id': f'bench-device-{uuid.uuid4().hex}'})
        response.raise_for_status()
        body = response.json()
        self.token = body['access_token']
        self.stack.invoke(
            'AdjustCreditsFunction',
            {
                'account_id': body['account_id'],
                'amount': credits,
                'business_id': f'bench:{uuid.uuid4().hex}',
                'reason': 'lifecycle bench credits',
                'actor': 'bench',
            },
        )

    def _auth(self, **extra: str) -> dict[str, str]:
        return {'authorization': f'Bearer {self.token}', **extra}

    def run_task(self, path: str, model: str, poll_interval: float) -> TaskRun:
        runtime = self.stack.runtime
        first_invocation, first_call = len(runtime.invocations), len(self.recorder.calls)
        response = self.http.post(
            '/v1/tasks',
            json={'model': model, 'input': {'prompt': 'a lighthouse at dusk'}},
            headers=self._auth(**{'Idempotency-Key': uuid.uuid4().hex}),
        )
        if response.status_code != 202:
            raise RuntimeError(f'POST /v1/tasks answered {response.status_code}: {response.text}')
        task_id = response.json()['id']
        # Probe until the final status is visible (these reads are tagged and left out of the costs).
        deadline = time.monotonic() + 60
        while True:
            status = self.http.get(f'/v1/tasks/{task_id}', headers=self._auth(**{PROBE_HEADER: '1'})).json()['status']
            seen = time.time()
            if status in FINAL:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f'{task_id} still {status} after 60 s')
            time.sleep(poll_interval)
        prediction = self.server.services['mock_provider'].get(task_id)
        completed = _epoch(prediction.completed_at) if prediction and prediction.completed_at else float('nan')
        execution_arn = f'{self.execution_prefix}:{task_id}'
        while self.sfn.describe_execution(executionArn=execution_arn)['status'] == 'RUNNING':
            time.sleep(0.02)
        # The one read a client makes once told the task is done (counted).
        self.http.get(f'/v1/tasks/{task_id}', headers=self._auth()).raise_for_status()
        time.sleep(0.1)
        invocations = runtime.invocations[first_invocation:]
        calls = self.recorder.calls[first_call:]
        events = self._history(execution_arn)
        return self._account(task_id, path, status, events, invocations, calls, seen - completed)

    def _history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {'executionArn': execution_arn, 'maxResults': 1000}
        while True:
            page = self.sfn.get_execution_history(**kwargs)
            events.extend(page['events'])
            if not page.get('nextToken'):
                return events
            kwargs['nextToken'] = page['nextToken']

    def _account(
        self,
        task_id: str,
        path: str,
        status: str,
        events: list[dict[str, Any]],
        invocations: list[Any],
        calls: list[ApiCall],
        seconds_to_succeeded: float,
    ) -> TaskRun:
        by_function: dict[str, Usage] = {}
        counted: Counter[str] = Counter()
        durations: dict[str, list[float]] = {}
        for record in invocations:
            if id(record) in self.recorder.probe_invocations or record.source == 'schedule':
                continue
            usage = by_function.setdefault(record.function, Usage())
            usage.lambda_requests += 1
            usage.lambda_gb_seconds += gb_seconds(self.memory_mb.get(record.function, 512), record.duration_ms)
            usage.api_requests += record.source == 'apigateway'
            counted[record.function] += 1
            durations.setdefault(record.function, []).append(record.duration_ms)
        operations: Counter[str] = Counter()
        unattributed: Counter[str] = Counter()
        billed: list[tuple[str, ApiCall]] = []
        idle = 0
        for call in calls:
            if call.probe or call.source == 'schedule' or call.origin == 'bench':
                continue
            if call.origin == 'esm':
                if call.operation == 'GetQueueAttributes':
                    continue  # the local poller's own lookup; Lambda's poller does not make it per batch
                if call.operation == 'ReceiveMessage' and not call.messages:
                    idle += 1
                    continue
                owner = ESM
            elif call.origin == 'platform':
                if call.service in ('dynamodb', 'sqs', 's3'):
                    unattributed[f'{call.service}:{call.operation}'] += 1
                continue
            else:
                owner = call.origin
            usage = by_function.setdefault(owner, Usage())
            if call.service == 'dynamodb':
                usage.read_units += call.read_units
                usage.write_units += call.write_units
            elif call.service == 'sqs':
                usage.sqs_requests += 1
            elif call.service == 's3':
                tier = s3_request_class(call.operation)
                if tier == 'put':
                    usage.s3_put_requests += 1
                elif tier == 'get':
                    usage.s3_get_requests += 1
            else:
                continue  # Step Functions API calls, SSM: not billed per request here
            operations[f'{call.service}:{call.operation}'] += 1
            billed.append((owner, call))
        task_item = self.recorder.items.get(self.tasks_table, {'pk': {'S': f'TASK#{task_id}'}, 'sk': {'S': 'TASK'}})
        return TaskRun(
            task_id=task_id,
            path=path,
            status=status,
            transitions=count_transitions(events),
            by_function=by_function,
            invocations=counted,
            durations_ms=durations,
            operations=operations,
            seconds_to_succeeded=seconds_to_succeeded,
            task_item_bytes=item_size(task_item),
            idle_receives=idle,
            unattributed=unattributed,
            calls=billed,
        )


def _arm64(template: Mapping[str, Any]) -> bool:
    """Whether every function runs on arm64 (the template's Globals, unless a function says otherwise).

    Read from the template: moto's CloudFormation does not pass ``Architectures`` on to the function.
    """
    default = template.get('Globals', {}).get('Function', {}).get('Architectures', ['x86_64'])
    return all(
        'arm64' in resource.get('Properties', {}).get('Architectures', default)
        for resource in template['Resources'].values()
        if resource['Type'] == 'AWS::Serverless::Function'
    )


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace('Z', '+00:00')).timestamp()


# ================================================================== report


def polling_model(
    webhook: PathResult, results: list[PathResult], memory_mb: Mapping[str, int]
) -> tuple[PollingModel, Usage]:
    """The modelled 10 s poller: our measured create/submit/settle/read, the wait replaced by 12 polls."""
    fixed = total(u for name, u in webhook.by_function().items() if name not in WAIT_FUNCTIONS)
    states = webhook.states()
    fixed.transitions = sum(states.get(s, 0.0) for s in FIXED_STATES)
    memory = memory_mb.get('PollTaskFunction', 512)
    polls = [
        gb_seconds(memory, duration)
        for result in results
        for run in result.runs
        for duration in run.durations_ms.get('PollTaskFunction', [])
    ]
    task_bytes = max(r.task_item_bytes for result in results for r in result.runs)
    model = PollingModel(
        poll_read_units=read_units(task_bytes, consistent=True),
        poll_write_units=write_units(task_bytes),
        poll_gb_seconds=statistics.mean(polls) if polls else 0.0,
    )
    return model, model.usage(fixed)


def _fmt(value: float) -> str:
    if value == 0:
        return '0'
    if abs(value) >= 100:
        return f'{value:,.0f}'
    if abs(value) >= 1:
        return f'{value:.2f}'
    return f'{value:.4f}' if abs(value) >= 0.001 else f'{value:.2e}'


def render(
    results: list[PathResult], model: PollingModel, modelled: Usage, *, arm64: bool, esm_queues: int, warmup: int
) -> str:
    columns = [(f'{r.path}: {r.model}', r.usage) for r in results]
    columns.append((f'model: {model.interval_seconds} s polls, {model.task_seconds} s task', modelled))
    n = len(results[0].runs)
    out: list[str] = []
    out.append(
        f'Lifecycle cost per task on the offline stack: {n} task(s) per path, one at a time, '
        f'after {warmup} uncounted warm-up task(s) per path'
    )
    out.append(f'Prices: AWS us-east-1 list prices as of {PRICES_AS_OF}, free tiers ignored.')
    header = f'{"":<36}' + ''.join(f'{name[:30]:>32}' for name, _ in columns)
    sub = f'{"":<36}' + ''.join(f'{"per task":>14}{"USD/1k tasks":>18}' for _ in columns)
    out += ['', header, sub, '-' * len(sub)]
    costs = [usd_per_1000(u, arm64=arm64) for _, u in columns]
    for label, name, _ in cost_lines(arm64=arm64):
        row = f'{label:<36}'
        for (_, usage), cost in zip(columns, costs, strict=True):
            row += f'{_fmt(getattr(usage, name)):>14}{cost[name]:>18.6f}'
        out.append(row)
    out.append('-' * len(sub))
    out.append(f'{"total":<36}' + ''.join(f'{"":>14}{c["total"]:>18.6f}' for c in costs))

    for result in results:
        out += ['', f'{result.path} path ({result.model}), per task, by function:']
        out.append(
            f'  {"function":<34}{"invocations":>12}{"ms mean":>10}{"GB-s":>10}{"RRU":>8}{"WRU":>8}{"SQS":>6}{"S3":>6}'
        )
        for name, usage in result.by_function().items():
            durations = [d for r in result.runs for d in r.durations_ms.get(name, [])]
            mean_ms = f'{statistics.mean(durations):.1f}' if durations else '-'
            s3 = usage.s3_put_requests + usage.s3_get_requests
            out.append(
                f'  {name:<34}{_fmt(usage.lambda_requests):>12}{mean_ms:>10}{_fmt(usage.lambda_gb_seconds):>10}'
                f'{_fmt(usage.read_units):>8}{_fmt(usage.write_units):>8}{_fmt(usage.sqs_requests):>6}{_fmt(s3):>6}'
            )
        states = ', '.join(f'{k} {_fmt(v)}' for k, v in result.states().items())
        out.append(f'  state transitions: {states}')
        ops: Counter[str] = Counter()
        for run in result.runs:
            ops.update(run.operations)
        out.append('  billed requests: ' + ', '.join(f'{k} {_fmt(v / n)}' for k, v in sorted(ops.items())))
        unattributed: Counter[str] = Counter()
        for run in result.runs:
            unattributed.update(run.unattributed)
        if unattributed:
            out.append(f'  NOT attributed to a function (left out): {dict(unattributed)}')

    out += [
        '',
        'Time from the provider finishing to succeeded visible in GET /v1/tasks/{id} (API polled every ~20 ms):',
    ]
    out.append(f'  {"path":<30}{"median s":>10}{"p95 s":>10}{"min s":>10}{"max s":>10}')
    for result in results:
        values = result.latencies()
        out.append(
            f'  {result.path + " (" + result.model + ")":<30}{statistics.median(values):>10.3f}'
            f'{percentile(values, 95):>10.3f}{min(values):>10.3f}{max(values):>10.3f}'
        )

    by_path = {r.path: r for r in results}
    if 'polling' in by_path:
        poll = by_path['polling'].by_function()
        cycle = poll.get('AwaitProviderFunction', Usage()) + poll.get('PollTaskFunction', Usage())
        cycle.transitions = 3  # AwaitProvider, Poll, Route
        cycle.api_requests = 0
        out += [
            '',
            'Ours on a longer task: the cost does not grow with the task while the webhook arrives within the '
            "model's webhook wait;",
            f'each wait that times out adds AwaitProvider + Poll + Route (3 transitions, 2 invocations): '
            f'+${usd_per_1000(cycle, arm64=arm64)["total"]:.6f} per 1,000 tasks.',
        ]

    idle = sum(r.idle_receives for result in results for r in result.runs)
    monthly_idle = esm_queues * 5 * 3 * 60 * 24 * 30
    out += [
        '',
        'How it was measured, and assumptions:',
        '- Transitions: every *StateEntered event of the execution history plus every Task retry (AWS bills each '
        'step executed, retries included).',
        '- Lambda: the runtime invocations of each task (API create + one GET after completion, webhook, SQS '
        'dispatcher, every step); the ~20 ms latency probes and scheduled functions are left out. GB-s use the '
        "template's MemorySize and the in-process durations (an approximation: moto answers faster than AWS, and "
        'an in-process import is not a Lambda cold start, hence the uncounted warm-up tasks).',
        '- DynamoDB: units from item sizes (names + values, DynamoDB size rules) read from moto before and after '
        'each call: writes 1 WRU per started KB of the larger image (failed conditions billed too), transactional '
        'x2, a ConditionCheck billed as a transactional write; secondary-index writes added (0, 1 or 2 per index, '
        'not doubled in transactions: assumed); reads 1 RRU per started 4 KB strongly consistent, 0.5 eventually, '
        "x2 transactional; queries by the total size of the items read. moto's ConsumedCapacity is a constant "
        '(0.5/1.0 per call) and is not used.',
        "- SQS: the API's SendMessage plus the event source mapping's ReceiveMessage that returned the message "
        "and its DeleteMessage, all billed as SQS requests: the mapping's polling is billed to the queue owner, "
        'empty receives included (AWS Knowledge Center, "Why are my Amazon SQS charges higher than expected?"). '
        'Idle polling is a fixed cost per mapping, not per task: '
        f'{idle} empty receives during the measured tasks here (the local poller long-polls 1 s); assumed on AWS: '
        f'5 pollers x 20 s long polls per mapping ~ {monthly_idle:,} requests/month for {esm_queues} mapping(s) = '
        f"${monthly_idle * PRICES.sqs_request:.2f}/month. The local poller's GetQueueAttributes is left out.",
        '- S3: PutObject (outputs copied into the bucket) at the PUT tier, HeadObject/GetObject at the GET tier; '
        'presigned URLs are signed locally (no request); the client downloading the output is not counted.',
        '- API Gateway: one request per API invocation (create, one read, provider webhook).',
        '- Scheduled functions (sweeper every minute, credit expiry hourly) are a fixed monthly cost, not per task.',
        f'- Modelled {model.interval_seconds} s poller for a {model.task_seconds} s task: {model.polls} polls, '
        f'each = {model.transitions_per_poll} transitions (Wait, Poll, Choice) + 1 Lambda invocation '
        f'({model.poll_gb_seconds:.5f} GB-s, our measured PollTask) + 1 strongly consistent read '
        f'({_fmt(model.poll_read_units)} RRU) and 1 write ({_fmt(model.poll_write_units)} WRU) of the task item '
        '(the largest measured), no index writes; plus our measured Submit/Settle/Done transitions and the '
        'create, dispatch, submit, settle and read costs of the webhook path (webhook, wait and poll removed).',
    ]
    return '\n'.join(out)


def render_calls(results: list[PathResult]) -> str:
    """Every billed call of the last task of each path, with the sizes its units came from."""
    out = []
    for result in results:
        run = result.runs[-1]
        out += ['', f'Billed calls of {run.task_id} ({result.path} path):']
        for owner, call in run.calls:
            units = ''
            if call.service == 'dynamodb':
                units = f'RRU {_fmt(call.read_units)} WRU {_fmt(call.write_units)}'
            out.append(f'  {owner:<26}{call.service + ":" + call.operation:<30}{units:<20}{call.detail.strip()}')
    return '\n'.join(out)


# ================================================================== main


def _process_is_clean() -> bool:
    """The offline stack sets the environment and caches clients: it must own its process."""
    return not {'atelier', 'moto'} & set(sys.modules) and 'AWS_ENDPOINT_URL' not in os.environ


def run(tasks: int, warmup: int, poll_interval: float, *, show_calls: bool = False) -> int:
    import boto3

    from infra.local.server import LocalServer

    recorder = Recorder()
    recorder.install(boto3._get_default_session().events)
    try:
        # Schedules as in the template (sweeper each minute; left out of the counts); handlers' INFO logs off.
        with LocalServer(
            port=0, schedule_seconds=3600.0, parameters={'LogLevel': 'WARNING'}, isolation=False
        ) as server:
            recorder.wrap(server.stack.runtime)
            bench = Bench(server, recorder)
            bench.sign_in_with_credits(CREDITS_PER_TASK * (tasks + warmup) * len(PATHS) + 100)
            results = []
            for path, model in PATHS:
                for _ in range(warmup):
                    bench.run_task(path, model, poll_interval)
                runs = [bench.run_task(path, model, poll_interval) for _ in range(tasks)]
                results.append(PathResult(path, model, runs))
            dynamodb_calls = sum(1 for c in recorder.calls if c.service == 'dynamodb' and c.origin not in ('bench',))
            polling, modelled = polling_model(results[0], results, bench.memory_mb)
            sys.stdout.write(
                render(results, polling, modelled, arm64=bench.arm64, esm_queues=bench.esm_queues, warmup=warmup) + '\n'
            )
            if show_calls:
                sys.stdout.write(render_calls(results) + '\n')
            sys.stdout.flush()
    finally:
        recorder.uninstall()
    failed = [r.task_id for result in results for r in result.runs if r.status != 'succeeded']
    if failed:
        sys.stdout.write(f'tasks that did not succeed: {failed}\n')
    if not dynamodb_calls:
        sys.stdout.write("no DynamoDB call was recorded: the instrumentation missed the functions' clients\n")
    return 1 if failed or not dynamodb_calls else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tasks', type=int, default=5, help='measured tasks per path (default 5)')
    parser.add_argument('--warmup', type=int, default=1, help='uncounted warm-up tasks per path (default 1)')
    parser.add_argument('--poll-interval', type=float, default=0.02, help='seconds between probe GETs')
    parser.add_argument('--calls', action='store_true', help="also list the last task's billed calls")
    args = parser.parse_args(argv)
    if not _process_is_clean():
        # Another benchmark already used this process: run in a fresh one.
        command = [sys.executable, '-m', 'infra.bench.lifecycle_bench', *(argv or [])]
        from infra.local.template import ROOT

        sys.stdout.flush()
        return subprocess.run(command, cwd=ROOT, check=False).returncode
    return run(args.tasks, args.warmup, args.poll_interval, show_calls=args.calls)


if __name__ == '__main__':
    raise SystemExit(main())
