"""The task store: tasks, idempotency records and provider-job lookups in the tasks table.

Items (one table, generic keys):

====================================  ================  ==========================================
pk                                    sk                what
====================================  ================  ==========================================
``TASK#{task_id}``                    ``TASK``          the task; gsi1 = the account's tasks by
                                                        creation time; gsi2 = open tasks by status
                                                        and deadline (sparse: removed when final)
``IDEM#{account_id}#{sha256(key)}``   ``IDEMPOTENCY``   the task an Idempotency-Key created (TTL)
``JOB#{provider}#{provider_job_id}``  ``JOB``           which task a provider's job belongs to
====================================  ================  ==========================================

When its account is deleted a finished task is erased (:meth:`TaskStore.erase`): its input, outputs and
errors go, its model, status, credits and times stay (``erased_at``).

Every state change is a conditional write, so two steps racing (a webhook and a poll, a cancel and a
submit, the sweeper and the state machine) can never both win.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from atelier.errors import DomainError, ErrorKind
from atelier.providers.base import JobError, JobState, ProviderCost, Status
from atelier.storage import StoredObject
from atelier.tasks.models import Outcome, Task

_TS = '%Y-%m-%dT%H:%M:%S.%fZ'
IDEMPOTENCY_TTL = timedelta(days=7)
_OPEN = [Status.QUEUED.value, Status.SUBMITTED.value, Status.RUNNING.value]


class InvalidCursor(DomainError):
    kind = ErrorKind.BAD_REQUEST
    code = 'invalid_cursor'


def ts(moment: datetime) -> str:
    """A fixed-width UTC timestamp whose string order is its time order."""
    return moment.astimezone(UTC).strftime(_TS)


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, _TS).replace(tzinfo=UTC)


def task_key(task_id: str) -> dict[str, Any]:
    return {'pk': {'S': f'TASK#{task_id}'}, 'sk': {'S': 'TASK'}}


def idempotency_key(account_id: str, key: str) -> dict[str, Any]:
    digest = hashlib.sha256(key.encode()).hexdigest()
    return {'pk': {'S': f'IDEM#{account_id}#{digest}'}, 'sk': {'S': 'IDEMPOTENCY'}}


def _s(value: str) -> dict[str, str]:
    return {'S': value}


def _n(value: float) -> dict[str, str]:
    return {'N': str(value)}


def _json(value: Any) -> dict[str, str]:
    if isinstance(value, BaseModel):
        return {'S': value.model_dump_json()}
    return {'S': json.dumps(value, separators=(',', ':'), sort_keys=True, default=_dump)}


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode='json')
    raise TypeError(type(value))


def _open_keys(status: Status, deadline_at: datetime, task_id: str) -> dict[str, Any]:
    return {'gsi2pk': _s(f'STATUS#{status.value}'), 'gsi2sk': _s(f'{ts(deadline_at)}#{task_id}')}


def task_item(task: Task) -> dict[str, Any]:
    """The low-level DynamoDB item of a new task (for a ``Put`` in the ledger's hold transaction)."""
    item: dict[str, Any] = {
        **task_key(task.task_id),
        'task_id': _s(task.task_id),
        'account_id': _s(task.account_id),
        'model_id': _s(task.model_id),
        'provider': _s(task.provider),
        'status': _s(task.status.value),
        'input': _json(task.input),
        'estimated': _n(task.estimated),
        'held': _n(task.held),
        'charged': _n(task.charged),
        'refunded': _n(task.refunded),
        'created_at': _s(ts(task.created_at)),
        'updated_at': _s(ts(task.updated_at)),
        'deadline_at': _s(ts(task.deadline_at)),
        'request_hash': _s(task.request_hash),
        'gsi1pk': _s(f'ACCOUNT#{task.account_id}'),
        'gsi1sk': _s(f'TASK#{ts(task.created_at)}#{task.task_id}'),
    }
    if not task.is_final:
        item.update(_open_keys(task.status, task.deadline_at, task.task_id))
    return item


def task_from_item(item: Mapping[str, Any]) -> Task:
    def s(name: str) -> str | None:
        value = item.get(name)
        return None if value is None else str(value['S'])

    def n(name: str) -> float | None:
        value = item.get(name)
        return None if value is None else float(value['N'])

    def loaded(name: str) -> Any:
        text = s(name)
        return None if text is None else json.loads(text)

    completed = s('completed_at')
    state, outcome, error, cost = loaded('provider_state'), loaded('outcome'), loaded('error'), loaded('provider_cost')
    position = n('queue_position')
    return Task(
        task_id=s('task_id') or '',
        account_id=s('account_id') or '',
        model_id=s('model_id') or '',
        provider=s('provider') or '',
        status=Status(s('status') or ''),
        input=loaded('input') or {},
        estimated=int(n('estimated') or 0),
        held=int(n('held') or 0),
        charged=int(n('charged') or 0),
        refunded=int(n('refunded') or 0),
        progress=n('progress'),
        queue_position=None if position is None else int(position),
        outputs=tuple(StoredObject.model_validate(o) for o in loaded('outputs') or []),
        error=None if error is None else JobError.model_validate(error),
        created_at=parse_ts(s('created_at') or ''),
        updated_at=parse_ts(s('updated_at') or ''),
        completed_at=None if completed is None else parse_ts(completed),
        deadline_at=parse_ts(s('deadline_at') or ''),
        request_hash=s('request_hash') or '',
        provider_job_id=s('provider_job_id'),
        provider_state=None if state is None else JobState.model_validate(state),
        provider_cost=None if cost is None else ProviderCost.model_validate(cost),
        outcome=None if outcome is None else Outcome.model_validate(outcome),
        cancel_requested=bool(item.get('cancel_requested', {}).get('BOOL', False)),
        token=s('token'),
    )


class IdempotencyRecord(BaseModel):
    task_id: str
    request_hash: str


class TaskStore:
    """The tasks table. ``dynamodb`` defaults to the shared low-level boto3 client."""

    def __init__(self, table: str, *, dynamodb: Any = None) -> None:
        self.table = table
        self._dynamodb = dynamodb

    @property
    def db(self) -> Any:
        if self._dynamodb is None:
            from atelier.aws import client

            self._dynamodb = client('dynamodb')
        return self._dynamodb

    # ------------------------------------------------------------------ creation (items for the hold transaction)
    def put_task(self, task: Task) -> dict[str, Any]:
        return {
            'Put': {
                'TableName': self.table,
                'Item': task_item(task),
                'ConditionExpression': 'attribute_not_exists(pk)',
            }
        }

    def put_idempotency(self, account_id: str, key: str, task: Task) -> dict[str, Any]:
        item = {
            **idempotency_key(account_id, key),
            'task_id': _s(task.task_id),
            'request_hash': _s(task.request_hash),
            'created_at': _s(ts(task.created_at)),
            'ttl': _n(int((task.created_at + IDEMPOTENCY_TTL).timestamp())),
        }
        return {
            'Put': {
                'TableName': self.table,
                'Item': item,
                'ConditionExpression': 'attribute_not_exists(pk)',
                'ReturnValuesOnConditionCheckFailure': 'ALL_OLD',
            }
        }

    # ------------------------------------------------------------------ reads
    def get(self, task_id: str) -> Task | None:
        item = self.db.get_item(TableName=self.table, Key=task_key(task_id), ConsistentRead=True).get('Item')
        return None if item is None else task_from_item(item)

    def get_idempotency(self, account_id: str, key: str) -> IdempotencyRecord | None:
        item = self.db.get_item(TableName=self.table, Key=idempotency_key(account_id, key), ConsistentRead=True).get(
            'Item'
        )
        return None if item is None else idempotency_from_item(item)

    def find_job(self, provider: str, provider_job_id: str) -> str | None:
        """The task id of a provider's job, or None."""
        key = {'pk': _s(f'JOB#{provider}#{provider_job_id}'), 'sk': _s('JOB')}
        item = self.db.get_item(TableName=self.table, Key=key, ConsistentRead=True).get('Item')
        return None if item is None else str(item['task_id']['S'])

    def list_for_account(
        self, account_id: str, *, limit: int, status: Status | None = None, cursor: str | None = None
    ) -> tuple[list[Task], str | None]:
        """The account's tasks, newest first; the cursor continues after the last one returned."""
        query: dict[str, Any] = {
            'TableName': self.table,
            'IndexName': 'gsi1',
            'KeyConditionExpression': 'gsi1pk = :pk AND begins_with(gsi1sk, :prefix)',
            'ExpressionAttributeValues': {':pk': _s(f'ACCOUNT#{account_id}'), ':prefix': _s('TASK#')},
            'ScanIndexForward': False,
        }
        if status is not None:
            query['FilterExpression'] = '#status = :status'
            query['ExpressionAttributeNames'] = {'#status': 'status'}
            query['ExpressionAttributeValues'][':status'] = _s(status.value)
        start = _decode_cursor(cursor, account_id) if cursor else None
        tasks: list[Task] = []
        while True:
            page = self.db.query(**query, Limit=limit, **({'ExclusiveStartKey': start} if start else {}))
            items = page.get('Items', [])
            for index, item in enumerate(items):
                tasks.append(task_from_item(item))
                if len(tasks) == limit:
                    more = index < len(items) - 1 or bool(page.get('LastEvaluatedKey'))
                    return tasks, _encode_cursor(tasks[-1]) if more else None
            start = page.get('LastEvaluatedKey')
            if not start:
                return tasks, None

    def account_tasks(self, account_id: str) -> Iterator[Task]:
        """Every task of the account, newest first (gsi1, eventually consistent: a task created a moment ago
        may be missing)."""
        query: dict[str, Any] = {
            'TableName': self.table,
            'IndexName': 'gsi1',
            'KeyConditionExpression': 'gsi1pk = :pk AND begins_with(gsi1sk, :prefix)',
            'ExpressionAttributeValues': {':pk': _s(f'ACCOUNT#{account_id}'), ':prefix': _s('TASK#')},
            'ScanIndexForward': False,
        }
        while True:
            page = self.db.query(**query)
            for item in page.get('Items', []):
                yield task_from_item(item)
            if not page.get('LastEvaluatedKey'):
                return
            query['ExclusiveStartKey'] = page['LastEvaluatedKey']

    def due(self, status: Status, now: datetime, *, limit: int = 100) -> Iterator[str]:
        """Ids of tasks in the open ``status`` whose deadline is at or before ``now`` (an index: may lag)."""
        query: dict[str, Any] = {
            'TableName': self.table,
            'IndexName': 'gsi2',
            'KeyConditionExpression': 'gsi2pk = :pk AND gsi2sk <= :now',
            'ExpressionAttributeValues': {':pk': _s(f'STATUS#{status.value}'), ':now': _s(ts(now) + '#~')},
            'Limit': limit,
        }
        while True:
            page = self.db.query(**query)
            for item in page.get('Items', []):
                yield str(item['task_id']['S'])
            if not page.get('LastEvaluatedKey'):
                return
            query['ExclusiveStartKey'] = page['LastEvaluatedKey']

    # ------------------------------------------------------------------ state changes
    def _update(self, task_id: str, update: str, condition: str, values: dict[str, Any], **extra: Any) -> Task | None:
        """Apply ``update`` if ``condition`` holds; the task after it, or None if the condition failed."""
        from botocore.exceptions import ClientError

        try:
            response = self.db.update_item(
                TableName=self.table,
                Key=task_key(task_id),
                UpdateExpression=update,
                ConditionExpression=f'attribute_exists(pk) AND ({condition})',
                ExpressionAttributeValues=values,
                ReturnValues='ALL_NEW',
                **extra,
            )
        except ClientError as exc:
            if exc.response.get('Error', {}).get('Code') == 'ConditionalCheckFailedException':
                return None
            raise
        return task_from_item(response['Attributes'])

    def mark_submitted(self, task: Task, state: JobState, now: datetime) -> bool:
        """Record the provider's job id (and where the task stands) unless the task moved on meanwhile."""
        from botocore.exceptions import ClientError

        status = Status.RUNNING if state.status is Status.RUNNING else Status.SUBMITTED
        update = {
            'Update': {
                'TableName': self.table,
                'Key': task_key(task.task_id),
                'UpdateExpression': 'SET #status = :status, provider_job_id = :job, updated_at = :now, '
                'gsi2pk = :gsi2pk' + (', queue_position = :position' if state.queue_position is not None else ''),
                'ConditionExpression': '#status = :queued AND attribute_not_exists(outcome)',
                'ExpressionAttributeNames': {'#status': 'status'},
                'ExpressionAttributeValues': {
                    ':status': _s(status.value),
                    ':job': _s(state.provider_job_id),
                    ':now': _s(ts(now)),
                    ':gsi2pk': _s(f'STATUS#{status.value}'),
                    ':queued': _s(Status.QUEUED.value),
                    **({':position': _n(state.queue_position)} if state.queue_position is not None else {}),
                },
            }
        }
        lookup = {
            'Put': {
                'TableName': self.table,
                'Item': {
                    'pk': _s(f'JOB#{task.provider}#{state.provider_job_id}'),
                    'sk': _s('JOB'),
                    'task_id': _s(task.task_id),
                    'account_id': _s(task.account_id),
                },
            }
        }
        try:
            self.db.transact_write_items(TransactItems=[update, lookup])
        except ClientError as exc:
            if exc.response.get('Error', {}).get('Code') == 'TransactionCanceledException':
                reasons = exc.response.get('CancellationReasons') or []
                if reasons and reasons[0].get('Code') == 'ConditionalCheckFailed':
                    return False
            raise
        return True

    def set_token(self, task_id: str, token: str, now: datetime) -> Task | None:
        return self._update(
            task_id,
            'SET #token = :token, token_set_at = :now',
            'attribute_exists(task_id)',
            {':token': _s(token), ':now': _s(ts(now))},
            ExpressionAttributeNames={'#token': 'token'},
        )

    def record_progress(self, task_id: str, state: JobState, now: datetime) -> Task | None:
        """A provider's non-final word: running, and how far along."""
        values: dict[str, Any] = {
            ':running': _s(Status.RUNNING.value),
            ':submitted': _s(Status.SUBMITTED.value),
            ':now': _s(ts(now)),
        }
        update = 'SET updated_at = :now'
        if state.status is Status.RUNNING:
            update += ', #status = :running, gsi2pk = :gsi2pk'
            values[':gsi2pk'] = _s(f'STATUS#{Status.RUNNING.value}')
        if state.progress is not None:
            update += ', progress = :progress'
            values[':progress'] = _n(state.progress)
        if state.queue_position is not None:
            update += ', queue_position = :position'
            values[':position'] = _n(state.queue_position)
        else:  # out of the queue (or the provider does not say): no stale position
            update += ' REMOVE queue_position'
        return self._update(
            task_id,
            update,
            '#status IN (:submitted, :running) AND attribute_not_exists(provider_state)',
            values,
            ExpressionAttributeNames={'#status': 'status'},
        )

    def record_final_state(self, task_id: str, state: JobState, now: datetime) -> Task | None:
        """The provider's final word, kept once: a duplicate or late one changes nothing (None)."""
        values: dict[str, Any] = {':state': _json(state), ':now': _s(ts(now))}
        update = 'SET provider_state = :state, updated_at = :now'
        if state.progress is not None:
            update += ', progress = :progress'
            values[':progress'] = _n(state.progress)
        if state.cost is not None:
            # Beside the provider's report (which erasure removes): the cost stays for accounting.
            update += ', provider_cost = :cost'
            values[':cost'] = _json(state.cost)
        return self._update(task_id, update + ' REMOVE queue_position', 'attribute_not_exists(provider_state)', values)

    def record_cost(self, task_id: str, cost: ProviderCost) -> Task | None:
        """The provider's cost of a job that reported it only after its task ended (once; credits untouched)."""
        return self._update(
            task_id,
            'SET provider_cost = :cost',
            'attribute_not_exists(provider_cost)',
            {':cost': _json(cost)},
        )

    def request_cancel(self, task_id: str, now: datetime) -> Task | None:
        return self._update(
            task_id,
            'SET cancel_requested = :yes, updated_at = :now',
            '#status IN (:q, :s, :r)',
            {':yes': {'BOOL': True}, ':now': _s(ts(now)), ':q': _s(_OPEN[0]), ':s': _s(_OPEN[1]), ':r': _s(_OPEN[2])},
            ExpressionAttributeNames={'#status': 'status'},
        )

    def claim_outcome(self, task_id: str, outcome: Outcome, now: datetime, *, unsubmitted: bool = False) -> Task | None:
        """Decide how the task ends, if nothing decided it before (None otherwise).

        ``unsubmitted``: only while no provider job exists (cancel before submit).
        """
        condition = 'attribute_not_exists(outcome) AND #status IN (:q, :s, :r)'
        if unsubmitted:
            condition += ' AND attribute_not_exists(provider_job_id)'
        return self._update(
            task_id,
            'SET outcome = :outcome, updated_at = :now',
            condition,
            {
                ':outcome': _json(outcome),
                ':now': _s(ts(now)),
                ':q': _s(_OPEN[0]),
                ':s': _s(_OPEN[1]),
                ':r': _s(_OPEN[2]),
            },
            ExpressionAttributeNames={'#status': 'status'},
        )

    def complete(self, task: Task, outcome: Outcome, *, charged: int, refunded: int, now: datetime) -> Task | None:
        """Make the claimed outcome the task's final state (None if it already is)."""
        values: dict[str, Any] = {
            ':status': _s(outcome.status.value),
            ':outputs': _json([o.model_dump(mode='json') for o in outcome.outputs]),
            ':charged': _n(charged),
            ':refunded': _n(refunded),
            ':now': _s(ts(now)),
            ':q': _s(_OPEN[0]),
            ':s': _s(_OPEN[1]),
            ':r': _s(_OPEN[2]),
        }
        update = 'SET #status = :status, outputs = :outputs, charged = :charged, refunded = :refunded, '
        update += 'updated_at = :now, completed_at = :now'
        if outcome.error is not None:
            update += ', #error = :error'
            values[':error'] = _json(outcome.error)
        if outcome.status is Status.SUCCEEDED:
            update += ', progress = :one'
            values[':one'] = _n(1)
        names = {'#status': 'status', '#token': 'token'}
        if outcome.error is not None:
            names['#error'] = 'error'
        update += ' REMOVE gsi2pk, gsi2sk, #token, queue_position'
        return self._update(task.task_id, update, '#status IN (:q, :s, :r)', values, ExpressionAttributeNames=names)

    def erase(self, task_id: str, now: datetime) -> bool:
        """Remove what a finished task kept of its user's content: the input (prompt, upload keys), the outputs,
        the provider's report and error messages (which may quote the input). Model, status, credits, times and
        the provider's job id stay, for accounting. False if it was erased before (or is not finished)."""
        return (
            self._update(
                task_id,
                'SET erased_at = :now, #input = :nothing, outputs = :none '
                'REMOVE outcome, provider_state, #error, progress, #token',
                'attribute_not_exists(erased_at) AND NOT (#status IN (:q, :s, :r))',
                {
                    ':now': _s(ts(now)),
                    ':nothing': _json({}),
                    ':none': _json([]),
                    ':q': _s(_OPEN[0]),
                    ':s': _s(_OPEN[1]),
                    ':r': _s(_OPEN[2]),
                },
                ExpressionAttributeNames={'#status': 'status', '#input': 'input', '#error': 'error', '#token': 'token'},
            )
            is not None
        )


def idempotency_from_item(item: Mapping[str, Any]) -> IdempotencyRecord:
    return IdempotencyRecord(task_id=item['task_id']['S'], request_hash=item['request_hash']['S'])


def _encode_cursor(task: Task) -> str:
    raw = json.dumps({'a': task.account_id, 'c': ts(task.created_at), 't': task.task_id}, separators=(',', ':'))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip('=')


def _decode_cursor(cursor: str, account_id: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + '=' * (-len(cursor) % 4)))
        if data['a'] != account_id:
            raise ValueError('cursor of another account')
        parse_ts(data['c'])
        task_id = str(data['t'])
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCursor('The cursor is not valid.') from exc
    return {
        **task_key(task_id),
        'gsi1pk': _s(f'ACCOUNT#{account_id}'),
        'gsi1sk': _s(f'TASK#{data["c"]}#{task_id}'),
    }
