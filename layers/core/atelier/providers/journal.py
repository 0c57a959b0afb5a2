"""The submission journal: what an adapter sent to its provider for a task, written before it answers.

The task service calls ``Provider.submit`` until it has stored the provider's job id on the task; a
crash or a timeout between the provider's answer and that write means a second call. Providers with
an idempotent submit (Cog's ``PUT /predictions/{id}``, the mock) absorb it; Replicate has no
idempotency key, so its adapter keeps the contract here:

1. *claim* the task's submission (a conditional put) before it sends anything;
2. *record* the prediction id the moment the provider answers;
3. on a later call, find the id recorded and poll it instead of creating a second prediction.

A claim without a job id is a submit whose outcome is unknown (the request may or may not have reached
the provider): the adapter resolves it before it may *claim* the next attempt.

Cog forgets a prediction once it has finished and has no GET: polling is a repeat of the same PUT, so
the Cog adapter keeps the request (model, input, webhook) here as well, and *notes a cancel*: a
canceled prediction must never be started again by such a repeat, and the time of the first cancel
starts its grace period (see :mod:`atelier.providers.cog.client`).

fal answers a submit with the URLs of the request's status, result and cancel (they name the model's
app, not the model: they cannot be rebuilt from the request id alone), and its webhooks name only the
request id; so the fal adapter *remembers* those details by job id and *recalls* them to poll, fetch
the result or cancel (see :mod:`atelier.providers.fal.client`).

Items live in the tasks table, beside the task store's (generic keys, expired by the table's TTL):

=======================================  ==========  ===============================================
pk                                       sk          attributes
=======================================  ==========  ===============================================
``SUBMIT#{provider}#{task_id}``          ``SUBMIT``  ``attempt`` (N), ``claimed_at`` (S),
                                                     ``job_id`` (S, once known), ``request`` (S, JSON),
                                                     ``cancel_requested_at`` (S, once canceled)
``JOBINFO#{provider}#{job_id}``          ``JOBINFO`` ``details`` (S, JSON): what the provider said of
                                                     its job (fal: status, result and cancel URLs, and
                                                     the model id; never the user's input)
=======================================  ==========  ===============================================
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from atelier.observability import logger
from atelier.providers.base import ProviderRejected, ProviderUnavailable

T = TypeVar('T')

#: How long a submission is kept (a task's deadline is at most a few hours).
JOURNAL_TTL = timedelta(days=7)
_TS = '%Y-%m-%dT%H:%M:%S.%fZ'


@dataclass(frozen=True)
class Submission:
    """One task's submission to one provider."""

    task_id: str
    attempt: int
    claimed_at: datetime
    job_id: str | None = None
    request: dict[str, Any] | None = None
    #: When the job was first asked to stop (None: never).
    cancel_requested_at: datetime | None = None


class SubmissionJournal(Protocol):
    def get(self, provider: str, task_id: str) -> Submission | None:
        """The task's submission (strongly consistent), or None."""
        ...

    def claim(
        self,
        provider: str,
        task_id: str,
        *,
        attempt: int,
        now: datetime,
        request: Mapping[str, Any] | None = None,
    ) -> bool:
        """Take the right to send ``attempt``: the first only if nothing was claimed, attempt ``n + 1`` only
        while attempt ``n`` holds the claim without a job id. False: someone else holds it."""
        ...

    def record(self, provider: str, task_id: str, job_id: str) -> str:
        """Keep the provider's job id for the task; returns the id on record (an earlier one wins)."""
        ...

    def release(self, provider: str, task_id: str, attempt: int) -> None:
        """Give ``attempt``'s claim back: the provider certainly started nothing (no-op otherwise)."""
        ...

    def note_cancel(self, provider: str, task_id: str, now: datetime) -> datetime | None:
        """Note that the job was asked to stop; returns when it first was (an earlier note wins), or None
        when the journal holds no submission for the task (nothing is written then)."""
        ...

    def remember(self, provider: str, job_id: str, details: Mapping[str, Any], now: datetime) -> None:
        """Keep what the provider said about its job ``job_id`` (the same details again: a no-op)."""
        ...

    def recall(self, provider: str, job_id: str) -> dict[str, Any] | None:
        """The details remembered for ``job_id``, or None."""
        ...


def submit_once(
    journal: SubmissionJournal,
    provider: str,
    task_id: str,
    *,
    clock: Callable[[], datetime],
    unresolved_after: timedelta,
    create: Callable[[int], T],
    follow: Callable[[str], T],
    find: Callable[[Submission], T | None] = lambda record: None,
) -> T:
    """The journal's protocol for a provider without an idempotent submit, for adapters to share.

    Claims attempt 1 and calls ``create(1)``; when a job id is on record, ``follow(job_id)`` instead (never a
    second job). A claim without a job id is a submit whose outcome is unknown: ``find(record)`` may find the
    job it made (Replicate lists recent predictions); else, once ``unresolved_after`` has passed since the
    claim (longer than any request of that attempt can last), the next attempt is claimed and created.
    Raises :class:`ProviderUnavailable` (try again later) while that is undecided.
    """
    record = journal.get(provider, task_id)
    if record is None:
        if journal.claim(provider, task_id, attempt=1, now=clock()):
            return create(1)
        record = journal.get(provider, task_id)
        if record is None:
            raise ProviderUnavailable('A concurrent submit of this task gave up; trying again.')
    if record.job_id is not None:
        return follow(record.job_id)  # submitted before (the answer was lost on its way to the task)
    found = find(record)
    if found is not None:
        return found
    if clock() - record.claimed_at < unresolved_after:
        raise ProviderUnavailable(f'An earlier submit of task {task_id} has no known outcome yet.')
    if not journal.claim(provider, task_id, attempt=record.attempt + 1, now=clock()):
        raise ProviderUnavailable('Another submit of this task is in progress.')
    logger.warning(
        f'{provider}: an earlier submit has no known outcome; submitting again',
        extra={'task_id': task_id, 'attempt': record.attempt + 1},
    )
    return create(record.attempt + 1)


def keep_first(
    journal: SubmissionJournal,
    provider: str,
    task_id: str,
    job_id: str,
    *,
    cancel: Callable[[str], object],
    follow: Callable[[str], T],
) -> T | None:
    """Record ``job_id`` for the task. None if it is the task's job; if another attempt's job was recorded first,
    ``job_id`` is a duplicate: it is canceled (best effort) and the recorded job followed."""
    recorded = journal.record(provider, task_id, job_id)
    if recorded == job_id:
        return None
    logger.warning(f'{provider}: duplicate job canceled', extra={'task_id': task_id, 'job_id': job_id})
    with contextlib.suppress(ProviderUnavailable, ProviderRejected):
        cancel(job_id)
    return follow(recorded)


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TS)


def _parse_ts(text: str) -> datetime:
    return datetime.strptime(text, _TS).replace(tzinfo=UTC)


class InMemoryJournal:
    """A journal in this process's memory (unit tests, single-process tools)."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str], Submission] = {}
        self._details: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, provider: str, task_id: str) -> Submission | None:
        with self._lock:
            return self._items.get((provider, task_id))

    def claim(
        self,
        provider: str,
        task_id: str,
        *,
        attempt: int,
        now: datetime,
        request: Mapping[str, Any] | None = None,
    ) -> bool:
        key = (provider, task_id)
        with self._lock:
            current = self._items.get(key)
            if attempt == 1 and current is None:
                self._items[key] = Submission(task_id, 1, now, request=dict(request) if request else None)
                return True
            if current is not None and current.job_id is None and current.attempt == attempt - 1:
                self._items[key] = replace(current, attempt=attempt, claimed_at=now)
                return True
            return False

    def record(self, provider: str, task_id: str, job_id: str) -> str:
        key = (provider, task_id)
        with self._lock:
            current = self._items.get(key) or Submission(task_id, 1, datetime.now(UTC))
            if current.job_id is None:
                self._items[key] = replace(current, job_id=job_id)
                return job_id
            return current.job_id

    def release(self, provider: str, task_id: str, attempt: int) -> None:
        key = (provider, task_id)
        with self._lock:
            current = self._items.get(key)
            if current is not None and current.job_id is None and current.attempt == attempt:
                del self._items[key]

    def note_cancel(self, provider: str, task_id: str, now: datetime) -> datetime | None:
        key = (provider, task_id)
        with self._lock:
            current = self._items.get(key)
            if current is None:
                return None
            if current.cancel_requested_at is None:
                current = self._items[key] = replace(current, cancel_requested_at=now)
            return current.cancel_requested_at

    def remember(self, provider: str, job_id: str, details: Mapping[str, Any], now: datetime) -> None:
        with self._lock:
            self._details[(provider, job_id)] = json.loads(json.dumps(details))

    def recall(self, provider: str, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            details = self._details.get((provider, job_id))
            return None if details is None else dict(details)


class DynamoDBJournal:
    """The journal in the tasks table. ``dynamodb`` defaults to the shared low-level boto3 client."""

    def __init__(self, table: str, *, dynamodb: Any = None) -> None:
        self.table = table
        self._dynamodb = dynamodb

    @property
    def db(self) -> Any:
        if self._dynamodb is None:
            from atelier.aws import client

            self._dynamodb = client('dynamodb')
        return self._dynamodb

    @staticmethod
    def _key(provider: str, task_id: str) -> dict[str, Any]:
        return {'pk': {'S': f'SUBMIT#{provider}#{task_id}'}, 'sk': {'S': 'SUBMIT'}}

    def get(self, provider: str, task_id: str) -> Submission | None:
        item = self.db.get_item(TableName=self.table, Key=self._key(provider, task_id), ConsistentRead=True).get('Item')
        if item is None:
            return None
        request = item.get('request')
        return Submission(
            task_id=task_id,
            attempt=int(item['attempt']['N']),
            claimed_at=_parse_ts(item['claimed_at']['S']),
            job_id=item['job_id']['S'] if 'job_id' in item else None,
            request=None if request is None else json.loads(request['S']),
            cancel_requested_at=_parse_ts(item['cancel_requested_at']['S']) if 'cancel_requested_at' in item else None,
        )

    def claim(
        self,
        provider: str,
        task_id: str,
        *,
        attempt: int,
        now: datetime,
        request: Mapping[str, Any] | None = None,
    ) -> bool:
        from botocore.exceptions import ClientError

        try:
            if attempt == 1:
                item = {
                    **self._key(provider, task_id),
                    'task_id': {'S': task_id},
                    'attempt': {'N': '1'},
                    'claimed_at': {'S': _ts(now)},
                    'ttl': {'N': str(int((now + JOURNAL_TTL).timestamp()))},
                }
                if request is not None:
                    item['request'] = {'S': json.dumps(request, separators=(',', ':'), sort_keys=True)}
                self.db.put_item(TableName=self.table, Item=item, ConditionExpression='attribute_not_exists(pk)')
            else:
                self.db.update_item(
                    TableName=self.table,
                    Key=self._key(provider, task_id),
                    UpdateExpression='SET #attempt = :next, claimed_at = :now',
                    ConditionExpression='#attempt = :previous AND attribute_not_exists(job_id)',
                    ExpressionAttributeNames={'#attempt': 'attempt'},
                    ExpressionAttributeValues={
                        ':next': {'N': str(attempt)},
                        ':previous': {'N': str(attempt - 1)},
                        ':now': {'S': _ts(now)},
                    },
                )
        except ClientError as exc:
            if exc.response.get('Error', {}).get('Code') == 'ConditionalCheckFailedException':
                return False
            raise
        return True

    def record(self, provider: str, task_id: str, job_id: str) -> str:
        from botocore.exceptions import ClientError

        try:
            self.db.update_item(
                TableName=self.table,
                Key=self._key(provider, task_id),
                # A record without a claim (never expected) still gets the fields a reader needs.
                UpdateExpression='SET job_id = :job, task_id = :task, #attempt = if_not_exists(#attempt, :one), '
                'claimed_at = if_not_exists(claimed_at, :now), #ttl = if_not_exists(#ttl, :ttl)',
                ConditionExpression='attribute_not_exists(job_id) OR job_id = :job',
                ExpressionAttributeNames={'#attempt': 'attempt', '#ttl': 'ttl'},
                ExpressionAttributeValues={
                    ':job': {'S': job_id},
                    ':task': {'S': task_id},
                    ':one': {'N': '1'},
                    ':now': {'S': _ts(datetime.now(UTC))},
                    ':ttl': {'N': str(int((datetime.now(UTC) + JOURNAL_TTL).timestamp()))},
                },
            )
        except ClientError as exc:
            if exc.response.get('Error', {}).get('Code') != 'ConditionalCheckFailedException':
                raise
            recorded = self.get(provider, task_id)
            if recorded is None or recorded.job_id is None:  # pragma: no cover - the condition just saw one
                raise
            return recorded.job_id
        return job_id

    def release(self, provider: str, task_id: str, attempt: int) -> None:
        from botocore.exceptions import ClientError

        try:
            self.db.delete_item(
                TableName=self.table,
                Key=self._key(provider, task_id),
                ConditionExpression='#attempt = :attempt AND attribute_not_exists(job_id)',
                ExpressionAttributeNames={'#attempt': 'attempt'},
                ExpressionAttributeValues={':attempt': {'N': str(attempt)}},
            )
        except ClientError as exc:
            if exc.response.get('Error', {}).get('Code') != 'ConditionalCheckFailedException':
                raise

    def note_cancel(self, provider: str, task_id: str, now: datetime) -> datetime | None:
        from botocore.exceptions import ClientError

        try:
            response = self.db.update_item(
                TableName=self.table,
                Key=self._key(provider, task_id),
                UpdateExpression='SET cancel_requested_at = if_not_exists(cancel_requested_at, :now)',
                ConditionExpression='attribute_exists(pk)',
                ExpressionAttributeValues={':now': {'S': _ts(now)}},
                ReturnValues='ALL_NEW',
            )
        except ClientError as exc:
            if exc.response.get('Error', {}).get('Code') == 'ConditionalCheckFailedException':
                return None
            raise
        return _parse_ts(response['Attributes']['cancel_requested_at']['S'])

    @staticmethod
    def _details_key(provider: str, job_id: str) -> dict[str, Any]:
        return {'pk': {'S': f'JOBINFO#{provider}#{job_id}'}, 'sk': {'S': 'JOBINFO'}}

    def remember(self, provider: str, job_id: str, details: Mapping[str, Any], now: datetime) -> None:
        item = {
            **self._details_key(provider, job_id),
            'details': {'S': json.dumps(details, separators=(',', ':'), sort_keys=True)},
            'ttl': {'N': str(int((now + JOURNAL_TTL).timestamp()))},
        }
        self.db.put_item(TableName=self.table, Item=item)

    def recall(self, provider: str, job_id: str) -> dict[str, Any] | None:
        item = self.db.get_item(TableName=self.table, Key=self._details_key(provider, job_id), ConsistentRead=True).get(
            'Item'
        )
        if item is None:
            return None
        details: dict[str, Any] = json.loads(item['details']['S'])
        return details
