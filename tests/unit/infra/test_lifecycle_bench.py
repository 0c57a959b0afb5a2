"""The lifecycle bench's arithmetic: DynamoDB units as AWS bills them, transitions, prices. No stack."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from atelier.tasks import AwaitInput, ReleaseInput, StepInput
from infra.bench.lifecycle_bench import (
    PRICES,
    IndexSpec,
    MotoItems,
    PollingModel,
    Recorder,
    Usage,
    average,
    count_transitions,
    gb_seconds,
    index_write_units,
    item_size,
    item_write_cost,
    number_size,
    percentile,
    read_units,
    s3_request_class,
    usd_per_1000,
    write_units,
)

# ---------------------------------------------------------------- item sizes


def test_item_size_is_attribute_names_plus_values_in_utf8_bytes():
    # Given an item with ASCII and multi-byte strings
    item = {'pk': {'S': 'abc'}, 'name': {'S': 'café'}}
    # Then names and values count their UTF-8 bytes
    assert item_size(item) == (2 + 3) + (4 + 5)


@pytest.mark.parametrize(
    ('number', 'size'),
    [('12345', 4), ('100', 2), ('-0.0012', 2), ('0', 2), ('3.14159', 4), ('1E+3', 2)],
)
def test_a_number_costs_one_byte_per_two_significant_digits_plus_one(number: str, size: int):
    assert number_size(number) == size


def test_binary_counts_raw_bytes_whether_given_as_bytes_or_base64_text():
    raw = b'\x00\x01\x02\x03\x04'
    assert item_size({'b': {'B': raw}}) == item_size({'b': {'B': base64.b64encode(raw).decode()}}) == 1 + 5


def test_lists_and_maps_cost_three_bytes_plus_one_per_element():
    # Given a map of one string and a list of a bool and a null
    item = {
        'm': {'M': {'a': {'S': 'xy'}}},
        'l': {'L': [{'BOOL': True}, {'NULL': True}]},
    }
    # Then each container adds 3 bytes, each element 1 byte (+ its name in a map)
    assert item_size(item) == (1 + 3 + 1 + 1 + 2) + (1 + 3 + (1 + 1) + (1 + 1))


def test_sets_cost_the_sum_of_their_elements():
    assert item_size({'s': {'SS': ['ab', 'cde']}, 'n': {'NS': ['1', '22']}}) == (1 + 5) + (1 + 2 + 2)


def test_a_missing_item_is_zero_bytes():
    assert item_size(None) == 0
    assert item_size({}) == 0


# ---------------------------------------------------------------- units


@pytest.mark.parametrize(('size', 'units'), [(0, 1), (1, 1), (1024, 1), (1025, 2), (4096, 4), (4097, 5)])
def test_a_write_costs_one_unit_per_started_kilobyte_and_at_least_one(size: int, units: int):
    assert write_units(size) == units


def test_a_transactional_write_costs_twice():
    assert write_units(1025, transactional=True) == 4


@pytest.mark.parametrize(
    ('size', 'consistent', 'transactional', 'units'),
    [
        (0, True, False, 1.0),
        (4096, True, False, 1.0),
        (4097, True, False, 2.0),
        (4096, False, False, 0.5),
        (8193, False, False, 1.5),
        (4096, True, True, 2.0),
        (4097, False, True, 4.0),
    ],
)
def test_a_read_costs_one_unit_per_started_4kb_half_if_eventual_twice_if_transactional(
    size: int, consistent: bool, transactional: bool, units: float
):
    assert read_units(size, consistent=consistent, transactional=transactional) == units


TABLE_KEYS = ('pk', 'sk')
OPEN_TASKS = IndexSpec('gsi2', ('gsi2pk', 'gsi2sk'), TABLE_KEYS)  # sparse, projects ALL


def task(status: str | None, **extra: str) -> dict[str, Any]:
    item = {'pk': {'S': 'TASK#1'}, 'sk': {'S': 'TASK'}, **{k: {'S': v} for k, v in extra.items()}}
    if status is not None:
        item |= {'gsi2pk': {'S': f'STATUS#{status}'}, 'gsi2sk': {'S': '2026-01-01'}}
    return item


def test_an_index_write_costs_nothing_when_the_entry_does_not_change():
    assert index_write_units(task('queued'), task('queued'), OPEN_TASKS) == 0
    assert index_write_units(task(None, a='1'), task(None, a='2'), OPEN_TASKS) == 0


def test_an_entry_added_to_or_removed_from_a_sparse_index_costs_one_write():
    assert index_write_units(None, task('queued'), OPEN_TASKS) == 1
    assert index_write_units(task('running'), task(None), OPEN_TASKS) == 1


def test_a_changed_index_key_costs_two_writes_delete_and_put():
    assert index_write_units(task('queued'), task('running'), OPEN_TASKS) == 2


def test_a_changed_projected_attribute_costs_one_write_of_the_larger_entry():
    before, after = task('running', note='x'), task('running', note='y' * 1500)
    assert index_write_units(before, after, OPEN_TASKS) == write_units(item_size(after))
    assert write_units(item_size(after)) == 2


def test_a_keys_only_index_ignores_non_key_changes():
    keys_only = IndexSpec('gsi2', ('gsi2pk', 'gsi2sk'), TABLE_KEYS, projection='KEYS_ONLY')
    assert index_write_units(task('running', note='x'), task('running', note='y'), keys_only) == 0


def test_an_include_index_projects_only_its_named_attributes():
    include = IndexSpec('gsi2', ('gsi2pk', 'gsi2sk'), TABLE_KEYS, projection='INCLUDE', non_key_attributes=('note',))
    assert index_write_units(task('running', note='x', other='a'), task('running', note='x', other='b'), include) == 0
    assert index_write_units(task('running', note='x'), task('running', note='y'), include) == 1


def test_an_item_write_is_billed_on_the_larger_image_even_when_its_condition_fails():
    big = task('running', blob='x' * 1500)
    # A write that fails its condition leaves the item as it was, and still costs its size
    assert item_write_cost(big, big, [OPEN_TASKS]).table == 2
    assert item_write_cost(big, big, [OPEN_TASKS]).indexes == 0
    # A shrinking item is billed on its size before
    assert item_write_cost(big, task('running'), []).table == 2


def test_a_transactional_item_write_doubles_the_table_units_not_the_index_units():
    cost = item_write_cost(None, task('queued'), [OPEN_TASKS], transactional=True)
    assert (cost.table, cost.indexes, cost.total) == (2, 1, 3)


def test_a_condition_check_is_billed_as_a_transactional_write_without_index_writes():
    cost = item_write_cost(task('queued'), task('queued'), [OPEN_TASKS], transactional=True, condition_check=True)
    assert (cost.table, cost.indexes) == (2, 0)


# ---------------------------------------------------------------- transitions


def entered(kind: str, name: str) -> dict[str, Any]:
    return {'type': f'{kind}StateEntered', 'stateEnteredEventDetails': {'name': name}}


def test_transitions_count_every_state_entered_and_every_task_retry():
    # Given a history: Submit fails once and is retried, then Route, Settle, Done
    events = [
        {'type': 'ExecutionStarted'},
        entered('Task', 'Submit'),
        {'type': 'TaskScheduled'},
        {'type': 'TaskFailed'},
        {'type': 'TaskScheduled'},
        {'type': 'TaskSucceeded'},
        {'type': 'TaskStateExited'},
        entered('Choice', 'Route'),
        entered('Task', 'Settle'),
        {'type': 'TaskScheduled'},
        {'type': 'TaskSucceeded'},
        entered('Succeed', 'Done'),
        {'type': 'ExecutionSucceeded'},
    ]
    transitions = count_transitions(events)
    # Then four states were entered and one retry happened: five billed transitions
    assert dict(transitions.entered) == {'Submit': 1, 'Route': 1, 'Settle': 1, 'Done': 1}
    assert transitions.retries == 1
    assert transitions.billed == 5


def test_a_state_entered_twice_counts_twice():
    events = [entered('Choice', 'Route'), entered('Task', 'Poll'), entered('Choice', 'Route')]
    assert count_transitions(events).entered['Route'] == 2
    assert count_transitions(events).billed == 3


# ---------------------------------------------------------------- prices


def test_the_prices_are_the_published_ones():
    assert PRICES.sfn_transition * 1_000 == pytest.approx(0.025)
    assert PRICES.lambda_request * 1_000_000 == pytest.approx(0.20)
    assert PRICES.dynamodb_write_unit * 1_000_000 == pytest.approx(0.625)
    assert PRICES.dynamodb_read_unit * 1_000_000 == pytest.approx(0.125)
    assert PRICES.sqs_request * 1_000_000 == pytest.approx(0.40)
    assert PRICES.s3_put_request * 1_000 == pytest.approx(0.005)
    assert PRICES.s3_get_request * 1_000 == pytest.approx(0.0004)
    assert PRICES.http_api_request * 1_000_000 == pytest.approx(1.00)


def test_usd_per_1000_tasks_line_by_line():
    # Given a task that makes 7 transitions, 8 Lambda requests of 0.25 GB-s in all, 14 RRU, 52 WRU,
    # 3 SQS requests, 1 S3 PUT, 2 S3 GETs and 3 API requests
    usage = Usage(
        transitions=7,
        lambda_requests=8,
        lambda_gb_seconds=0.25,
        read_units=14,
        write_units=52,
        sqs_requests=3,
        s3_put_requests=1,
        s3_get_requests=2,
        api_requests=3,
    )
    cost = usd_per_1000(usage)
    # Then 1,000 such tasks cost, line by line
    assert cost['transitions'] == pytest.approx(0.175)
    assert cost['lambda_requests'] == pytest.approx(0.0016)
    assert cost['lambda_gb_seconds'] == pytest.approx(250 * 0.0000133334)
    assert cost['read_units'] == pytest.approx(0.00175)
    assert cost['write_units'] == pytest.approx(0.0325)
    assert cost['sqs_requests'] == pytest.approx(0.0012)
    assert cost['s3_put_requests'] == pytest.approx(0.005)
    assert cost['s3_get_requests'] == pytest.approx(0.0008)
    assert cost['api_requests'] == pytest.approx(0.003)
    assert cost['total'] == pytest.approx(sum(v for k, v in cost.items() if k != 'total'))
    # x86 duration is dearer than arm64
    assert usd_per_1000(usage, arm64=False)['lambda_gb_seconds'] == pytest.approx(250 * 0.0000166667)


def test_gb_seconds_round_the_duration_up_to_the_millisecond():
    assert gb_seconds(512, 100.0) == pytest.approx(0.05)
    assert gb_seconds(1024, 0.2) == pytest.approx(0.001)


def test_usages_add_and_average():
    a, b = Usage(transitions=6, read_units=1), Usage(transitions=8, write_units=4)
    assert a + b == Usage(transitions=14, read_units=1, write_units=4)
    assert average([a, b]) == Usage(transitions=7, read_units=0.5, write_units=2)
    assert average([]) == Usage()


def test_the_10s_polling_model_of_a_2_minute_task_adds_12_polls_to_the_fixed_costs():
    # Given fixed create/submit/settle costs and a poll of one invocation, one read and one write
    fixed = Usage(transitions=3, lambda_requests=6, read_units=10, write_units=40, api_requests=2)
    model = PollingModel(poll_read_units=1, poll_write_units=2, poll_gb_seconds=0.01)
    usage = model.usage(fixed)
    # Then 12 polls of 3 transitions each are added
    assert model.polls == 12
    assert usage.transitions == 3 + 36
    assert usage.lambda_requests == 6 + 12
    assert usage.lambda_gb_seconds == pytest.approx(0.12)
    assert (usage.read_units, usage.write_units, usage.api_requests) == (22, 64, 2)
    # And the transitions alone are $0.975 per 1,000 tasks
    assert usd_per_1000(usage)['transitions'] == pytest.approx(0.975)


def test_percentiles_interpolate_between_ranks():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert percentile([2.5], 95) == 2.5


def test_s3_requests_fall_into_the_two_price_tiers():
    assert s3_request_class('PutObject') == 'put'
    assert s3_request_class('ListObjectsV2') == 'put'
    assert s3_request_class('GetObject') == 'get'
    assert s3_request_class('HeadObject') == 'get'
    assert s3_request_class('DeleteObject') is None


# ---------------------------------------------------------------- the recorder, on fake items


class FakeItems(MotoItems):
    """A table with one sparse ALL index, held in a dict instead of moto."""

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], dict[str, Any]] = {}

    def spec(self, name: str) -> tuple[tuple[str, ...], tuple[IndexSpec, ...]]:
        return TABLE_KEYS, (OPEN_TASKS,)

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        return self.store.get((key['pk']['S'], key['sk']['S'])) if key else None

    def put(self, item: dict[str, Any]) -> None:
        self.store[(item['pk']['S'], item['sk']['S'])] = item


def call(recorder: Recorder, operation: str, params: dict[str, Any], apply: Any = None, **parsed: Any) -> Any:
    """Drive the recorder's handlers as botocore does around one call."""
    model = SimpleNamespace(name=operation, service_model=SimpleNamespace(service_name='dynamodb'))
    context: dict[str, Any] = {}
    recorder._before_parameter_build(params=params, model=model, context=context)
    recorder._before_call(model=model, context=context)
    if apply:
        apply()
    status = 400 if 'Error' in parsed else 200
    recorder._after_call(http_response=SimpleNamespace(status_code=status), parsed=parsed, model=model, context=context)
    return recorder.calls[-1]


def test_the_recorder_bills_an_update_on_the_item_before_and_after_and_its_index():
    # Given a queued task of ~1.5 KB in a table with a sparse open-tasks index
    items = FakeItems()
    items.put(task('queued', blob='x' * 1500))
    recorder = Recorder(items)
    key = {'pk': {'S': 'TASK#1'}, 'sk': {'S': 'TASK'}}
    # When an UpdateItem moves it to running (the index key changes)
    recorded = call(
        recorder, 'UpdateItem', {'TableName': 't', 'Key': key}, lambda: items.put(task('running', blob='x' * 1500))
    )
    # Then the table write is 2 WRU and the index pays a delete and a put of 2 WRU each
    assert recorded.write_units == 2 + 4
    assert recorded.index_write_units == 4
    assert recorded.origin == 'bench'  # made from the main thread, outside any function


def test_the_recorder_bills_a_failed_conditional_write_and_not_a_validation_error():
    items = FakeItems()
    items.put(task('queued'))
    recorder = Recorder(items)
    key = {'pk': {'S': 'TASK#1'}, 'sk': {'S': 'TASK'}}
    failed = call(
        recorder, 'UpdateItem', {'TableName': 't', 'Key': key}, Error={'Code': 'ConditionalCheckFailedException'}
    )
    assert (failed.write_units, failed.ok) == (1, False)
    invalid = call(recorder, 'UpdateItem', {'TableName': 't', 'Key': key}, Error={'Code': 'ValidationException'})
    assert invalid.write_units == 0


def test_the_recorder_bills_a_transaction_per_item_doubled():
    # Given a transaction that puts a new task and checks an existing one
    items = FakeItems()
    items.put(task('queued'))
    recorder = Recorder(items)
    new = {'pk': {'S': 'TASK#2'}, 'sk': {'S': 'TASK'}, 'gsi2pk': {'S': 'STATUS#queued'}, 'gsi2sk': {'S': 'x'}}
    params = {
        'TransactItems': [
            {'Put': {'TableName': 't', 'Item': new}},
            {'ConditionCheck': {'TableName': 't', 'Key': {'pk': {'S': 'TASK#1'}, 'sk': {'S': 'TASK'}}}},
        ]
    }
    recorded = call(recorder, 'TransactWriteItems', params, lambda: items.put(new))
    # Then the put is 2 + 1 index write, the check 2
    assert recorded.write_units == 3 + 2


def test_the_recorder_bills_reads_by_consistency_and_queries_by_total_size():
    items = FakeItems()
    for n in range(3):
        items.put({'pk': {'S': 'ACCT'}, 'sk': {'S': f'E{n}'}, 'blob': {'S': 'x' * 1800}})
    recorder = Recorder(items)
    strong = call(
        recorder, 'GetItem', {'TableName': 't', 'Key': {'pk': {'S': 'ACCT'}, 'sk': {'S': 'E0'}}, 'ConsistentRead': True}
    )
    eventual = call(recorder, 'GetItem', {'TableName': 't', 'Key': {'pk': {'S': 'NONE'}, 'sk': {'S': 'X'}}})
    assert (strong.read_units, eventual.read_units) == (1.0, 0.5)
    # A query returning three ~1.8 KB items reads ~5.4 KB: two 4 KB units, even if it projected only the keys
    keys_only = [{'pk': {'S': 'ACCT'}, 'sk': {'S': f'E{n}'}} for n in range(3)]
    query = call(recorder, 'Query', {'TableName': 't', 'ConsistentRead': True}, Items=keys_only, ScannedCount=3)
    assert query.read_units == 2.0


# ---------------------------------------------------------------- sample events (tests/events)

EVENTS = Path(__file__).resolve().parents[2] / 'events'


@pytest.mark.parametrize(
    ('name', 'model'),
    [
        ('submit_task', StepInput),
        ('await_provider', AwaitInput),
        ('poll_task', StepInput),
        ('settle_task', StepInput),
        ('release_task', ReleaseInput),
    ],
)
def test_the_lifecycle_step_events_are_what_the_steps_take(name: str, model: type[StepInput]):
    step = model.model_validate(json.loads((EVENTS / 'lifecycle' / f'{name}.json').read_text()))
    assert step.task_id.startswith('tsk_') and step.account_id.startswith('acct_')


def test_the_dispatch_event_is_an_sqs_batch_of_one_task_message():
    from functions.dispatch_task.app import DispatchRecord

    event = json.loads((EVENTS / 'lifecycle' / 'dispatch_task.json').read_text())
    assert DispatchRecord.model_validate(event['Records'][0]).body.task_id.startswith('tsk_')


def test_the_events_readme_lists_every_event_file():
    readme = (EVENTS / 'README.md').read_text()
    files = sorted(p.relative_to(EVENTS).as_posix() for p in EVENTS.rglob('*.json'))
    assert files
    assert [f for f in files if f'`{f}`' not in readme] == []
