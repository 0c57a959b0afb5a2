"""Account deletion (``DELETE /v1/me``; App Store Review Guideline 5.1.1(v)).

Two parts. The request (the API, synchronous, a few writes) makes the account unusable at once; the purge (a
queued job, :class:`AccountPurge`) removes what the account left behind, and can run any number of times.

The request, in this order:
1. queue the purge (first: from here on the deletion completes even if the request dies, without the client,
   whose tokens are about to stop working, having to come back);
2. mark the account item ``deleted_at`` / ``deletion = deleting`` (no new session opens from now on:
   :meth:`atelier.identity.sessions.SessionStore.open` checks the mark in its transaction);
3. revoke its API keys and every session: its access and refresh tokens answer 401 from now on.

The purge, in this order (each step idempotent; a crash anywhere is completed by the queue's retry):
1. the mark again, then the API keys and sessions again (a request that died after queueing);
2. every open task ends, canceled, every credit held refunded (through the task service, so the ledger
   releases the holds), and every task's input, outputs and errors are erased;
3. the account's outputs and uploads are deleted from S3;
4. its devices and identities are released (:mod:`atelier.identity.claims`): their next sign-in opens a new,
   empty account without welcome credits;
5. the raw bodies of its payment events (names, emails, addresses) are deleted;
6. the account is marked ``deletion = deleted`` (``purged_at``), and a second run is queued for
   :data:`RECHECK_DELAY_SECONDS` later: a task step that was already copying outputs into S3 when the task
   was canceled (Settle or the sweeper, up to their 300 s timeout) may still write them, and a task created
   concurrently with the request may have been missed; the recheck runs every step again and finds them.

What stays, as accounting records without personal data: the account item (random id, plan, balances), its
ledger entries, lots and holds (business ids, amounts, system notes); the payment event records and payment
states (provider ids, amounts); the tasks without their content (model, status, credits, times); revoked
session items (hashes, times) until their TTL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from atelier.errors import NotFound
from atelier.identity.claims import ClaimKind
from atelier.observability import logger
from atelier.storage import account_media_prefixes

#: When the purge runs again after its first run. Longer than the Timeout of SettleTaskFunction and
#: SweepTasksFunction (300 s in template.yaml; a unit test keeps them in step), within SQS's 900 s delay limit.
RECHECK_DELAY_SECONDS = 600

#: ``revoked_reason`` of the sessions (and API keys) a deletion revokes.
REVOKED_REASON = 'account_deleted'


class DeletionStatus(StrEnum):
    DELETING = 'deleting'  # requested: unusable at once, the purge under way
    DELETED = 'deleted'  # purged (a recheck may still run)


@dataclass(frozen=True)
class DeletionState:
    account_id: str
    status: DeletionStatus
    requested_at: str  # ISO 8601, UTC


class AccountNotFound(NotFound):
    code = 'account_not_found'


# ---------------------------------------------------------------------------------------------- ports


class DeletionMarker(Protocol):
    def mark(self, account_id: str, now: datetime) -> DeletionState:
        """Mark the account deleted (idempotent)."""
        ...

    def finish(self, account_id: str, now: datetime) -> DeletionState:
        """Mark the marked account purged."""
        ...


class DeletionQueue(Protocol):
    def send(self, account_id: str, *, recheck: bool = False, delay_seconds: int = 0) -> None:
        """Queue a purge of the account (``recheck``: the second run)."""
        ...


class SessionRevoker(Protocol):
    def end_all(self, account_id: str, reason: str) -> int:
        """Revoke every open session of the account; how many were open."""
        ...


class ApiKeyRevoker(Protocol):
    def revoke_all(self, account_id: str, reason: str) -> int:
        """Revoke every API key of the account; how many were active."""
        ...


class TaskCounts(Protocol):
    @property
    def ended(self) -> int: ...

    @property
    def erased(self) -> int: ...


class AccountTasks(Protocol):
    def close_account(self, account_id: str) -> TaskCounts:
        """End the account's open tasks (refunded) and erase its tasks' content."""
        ...


class Media(Protocol):
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix``; how many."""
        ...


class PaymentRecords(Protocol):
    def delete_raw_bodies(self, account_id: str) -> int:
        """Delete the raw bodies of the account's payment events; how many were still kept."""
        ...


class ClaimReleaser(Protocol):
    def release_all(self, account_id: str, kind: ClaimKind) -> int:
        """Release the account's devices or identities; how many it still had."""
        ...


# ---------------------------------------------------------------------------------------------- adapters


class DeletionMarks:
    """The deletion mark on the ledger's account item (attributes the ledger's own writes leave alone)::

    deleted_at   when the deletion was requested (the first request's time; set once)
    deletion     deleting | deleted
    purged_at    when the purge last finished
    """

    def __init__(self, table_name: str, client: Any) -> None:
        self._table = table_name
        self._client = client

    def mark(self, account_id: str, now: datetime) -> DeletionState:
        """Mark the account deleted (again is fine: the first time stays). :class:`AccountNotFound` if none."""
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=_account_key(account_id),
                UpdateExpression='SET deleted_at = if_not_exists(deleted_at, :now), '
                'deletion = if_not_exists(deletion, :deleting)',
                ConditionExpression='attribute_exists(pk)',
                ExpressionAttributeValues={
                    ':now': {'S': _iso(now)},
                    ':deleting': {'S': DeletionStatus.DELETING.value},
                },
                ReturnValues='ALL_NEW',
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            raise AccountNotFound(f'There is no account {account_id}.') from None
        return _state(account_id, response['Attributes'])

    def finish(self, account_id: str, now: datetime) -> DeletionState:
        """Mark the marked account purged."""
        response = self._client.update_item(
            TableName=self._table,
            Key=_account_key(account_id),
            UpdateExpression='SET deletion = :deleted, purged_at = :now',
            ConditionExpression='attribute_exists(deleted_at)',
            ExpressionAttributeValues={':now': {'S': _iso(now)}, ':deleted': {'S': DeletionStatus.DELETED.value}},
            ReturnValues='ALL_NEW',
        )
        return _state(account_id, response['Attributes'])

    def state(self, account_id: str) -> DeletionState | None:
        """Where the account's deletion stands; None if it was never requested (or there is no account)."""
        item = self._client.get_item(TableName=self._table, Key=_account_key(account_id), ConsistentRead=True).get(
            'Item'
        )
        return _state(account_id, item) if item and 'deleted_at' in item else None


class SqsDeletionQueue:
    """The account deletion queue (``AccountDeletionQueue``): messages ``{"account_id", "recheck"}``."""

    def __init__(self, queue_url: str, *, sqs: Any = None) -> None:
        self.queue_url = queue_url
        self._sqs = sqs

    def send(self, account_id: str, *, recheck: bool = False, delay_seconds: int = 0) -> None:
        from atelier.aws import client

        (self._sqs or client('sqs')).send_message(
            QueueUrl=self.queue_url,
            MessageBody=json.dumps({'account_id': account_id, 'recheck': recheck}),
            DelaySeconds=delay_seconds,
        )


# ---------------------------------------------------------------------------------------------- the request


def request_deletion(
    account_id: str,
    *,
    queue: DeletionQueue,
    marks: DeletionMarker,
    sessions: SessionRevoker,
    api_keys: ApiKeyRevoker,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> DeletionState:
    """Delete the account: queue the purge, mark it, revoke its API keys and sessions (see the module doc).

    Idempotent: the same request again (before the tokens stop working, or after a failure) queues another
    purge, which finds less to do.
    """
    queue.send(account_id)
    state = marks.mark(account_id, now())
    keys = api_keys.revoke_all(account_id, REVOKED_REASON)
    revoked = sessions.end_all(account_id, REVOKED_REASON)
    logger.info('account deletion requested', extra={'account_id': account_id, 'sessions': revoked, 'keys': keys})
    return state


# ---------------------------------------------------------------------------------------------- the purge


@dataclass(frozen=True)
class PurgeReport:
    """What one run of the purge found and removed (a second run finds nothing left)."""

    account_id: str
    status: str
    recheck: bool
    api_keys_revoked: int
    sessions_revoked: int
    tasks_ended: int
    tasks_erased: int
    objects_deleted: int
    devices_released: int
    identities_released: int
    raw_payment_bodies_deleted: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AccountPurge:
    """Removes what a deleted account left behind (see the module doc); every step can run again."""

    marks: DeletionMarker
    queue: DeletionQueue
    sessions: SessionRevoker
    api_keys: ApiKeyRevoker
    tasks: AccountTasks
    media: Media
    claims: ClaimReleaser
    payments: PaymentRecords
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def run(self, account_id: str, *, recheck: bool = False) -> PurgeReport:
        """Purge the account (marking it deleted if the request did not get that far)."""
        self.marks.mark(account_id, self.clock())
        keys = self.api_keys.revoke_all(account_id, REVOKED_REASON)
        sessions = self.sessions.end_all(account_id, REVOKED_REASON)
        tasks = self.tasks.close_account(account_id)
        objects = sum(self.media.delete_prefix(prefix) for prefix in account_media_prefixes(account_id))
        devices = self.claims.release_all(account_id, ClaimKind.DEVICE)
        identities = self.claims.release_all(account_id, ClaimKind.IDENTITY)
        raw_bodies = self.payments.delete_raw_bodies(account_id)
        state = self.marks.finish(account_id, self.clock())
        if not recheck:
            self.queue.send(account_id, recheck=True, delay_seconds=RECHECK_DELAY_SECONDS)
        report = PurgeReport(
            account_id=account_id,
            status=state.status.value,
            recheck=recheck,
            api_keys_revoked=keys,
            sessions_revoked=sessions,
            tasks_ended=tasks.ended,
            tasks_erased=tasks.erased,
            objects_deleted=objects,
            devices_released=devices,
            identities_released=identities,
            raw_payment_bodies_deleted=raw_bodies,
        )
        logger.info('account purged', extra=report.as_dict())
        return report


def _account_key(account_id: str) -> dict[str, dict[str, str]]:
    return {'pk': {'S': f'ACCT#{account_id}'}, 'sk': {'S': 'ACCOUNT'}}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def _state(account_id: str, item: dict[str, Any]) -> DeletionState:
    return DeletionState(
        account_id=account_id,
        status=DeletionStatus(item['deletion']['S']),
        requested_at=item['deleted_at']['S'],
    )
