"""Account deletion end to end on moto and DynamoDB Local: the request makes the account unusable at once, the
purge ends its tasks (holds released), deletes its files, devices, identities and raw payment bodies, keeps a
balanced ledger, leaves other accounts alone, and can run again (or after a crash) to the same result."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from atelier.identity.api_keys import ApiKeys
from atelier.identity.claims import AccountClaims
from atelier.identity.deletion import (
    RECHECK_DELAY_SECONDS,
    AccountPurge,
    DeletionMarks,
    DeletionStatus,
    request_deletion,
)
from atelier.identity.devices import DeviceDirectory
from atelier.identity.identities import IdentityDirectory, sign_in_identity
from atelier.identity.oidc import VerifiedIdentity
from atelier.identity.service import SignUpLimits, WelcomeGrant, sign_in_device
from atelier.identity.sessions import AccountDeleted, Sessions, SessionStore, SessionTokens
from atelier.identity.tokens import InvalidToken, Keyring
from atelier.ledger import LotKind
from atelier.payments.store import PaymentsTable
from atelier.storage import MediaDeletionFailed
from atelier.tasks import AwaitInput, TaskStatus
from tests.integration.tasks.conftest import BUCKET, World
from tests.integration.tasks.conftest import receiver as receiver
from tests.integration.tasks.conftest import world as world
from tests.support.dynamodb_local import create_table

RING = Keyring.parse('integration-test-key-of-at-least-32-chars', stage='test')
WELCOME = WelcomeGrant(10)


@dataclass
class FakeDeletionQueue:
    sent: list[tuple[str, bool, int]] = field(default_factory=list)

    def send(self, account_id: str, *, recheck: bool = False, delay_seconds: int = 0) -> None:
        self.sent.append((account_id, recheck, delay_seconds))


@dataclass
class User:
    account_id: str
    device_id: str
    device_secret: str
    identity: VerifiedIdentity
    tokens: SessionTokens
    upload: str
    finished_task: str
    event_id: str


@dataclass
class Deletion:
    """A world of tasks, plus sessions, devices, identities and payment events in their tables."""

    world: World
    events_table: str
    queue: FakeDeletionQueue = field(default_factory=FakeDeletionQueue)

    def __post_init__(self) -> None:
        ddb, table = self.world.ddb, self.world.ledger_table
        self.sessions = Sessions(
            SessionStore(table, ddb, refresh_ttl_seconds=86400), lambda: RING, access_ttl_seconds=900
        )
        self.devices = DeviceDirectory(table, ddb)
        self.identities = IdentityDirectory(table, ddb)
        self.payments = PaymentsTable(self.events_table, ddb)
        self.marks = DeletionMarks(table, ddb)
        self.api_keys = ApiKeys(table, ddb)

    def purge(self, **ports: Any) -> AccountPurge:
        return AccountPurge(
            marks=self.marks,
            queue=self.queue,
            sessions=self.sessions,
            api_keys=self.api_keys,
            tasks=ports.get('tasks', self.world.service),
            media=ports.get('media', self.world.service.media),
            claims=AccountClaims(self.world.ledger_table, self.world.ddb),
            payments=self.payments,
        )

    def request(self, account_id: str) -> Any:
        return request_deletion(
            account_id, queue=self.queue, marks=self.marks, sessions=self.sessions, api_keys=self.api_keys
        )

    def device_sign_in(self, device_id: str, secret: str | None = None) -> Any:
        return sign_in_device(
            device_id,
            secret,
            ledger=self.world.ledger,
            devices=self.devices,
            source_ip=f'192.0.2.{uuid.uuid4().int % 250}',
            limits=SignUpLimits(per_address_per_hour=1000),
            welcome=WELCOME,
        )

    def identity_sign_in(self, who: VerifiedIdentity) -> str:
        return sign_in_identity(
            who,
            ledger=self.world.ledger,
            identities=self.identities,
            source_ip='192.0.2.7',
            limits=SignUpLimits(per_address_per_hour=1000),
            welcome=WELCOME,
        )

    def user(self, credits: int = 30) -> User:
        """A device sign-up with a linked identity, two sessions, paid credits, a finished task with its
        outputs in S3, an upload, and a Stripe event (record and raw body) attributed to the account."""
        device_id = f'device-{uuid.uuid4().hex}'
        signed = self.device_sign_in(device_id)
        account = signed.account_id
        who = VerifiedIdentity(
            issuer='https://issuer.example', subject=uuid.uuid4().hex, email=None, email_verified=False, provider='t'
        )
        self.identities.link(who, account, datetime.now(UTC).isoformat())
        self.world.ledger.grant(account, amount=credits, kind=LotKind.PAID, business_id=f'stripe:checkout:{account}')
        tokens = self.sessions.start(account)
        self.sessions.start(account)
        finished = self.world.create(account, 'mock/image')
        self.world.run(finished)
        assert self.world.task(finished.task_id).status is TaskStatus.SUCCEEDED
        upload = f'uploads/{account}/{uuid.uuid4().hex}.png'
        self.world.s3.put_object(Bucket=BUCKET, Key=upload, Body=b'\x89PNG upload', ContentType='image/png')
        event_id = f'evt_{uuid.uuid4().hex[:12]}'
        body = json.dumps({'id': event_id, 'data': {'object': {'customer_email': 'someone@example.com'}}}).encode()
        self.payments.record_event('stripe', event_id, 'checkout.session.completed', body)
        self.payments.mark_event('stripe', event_id, 'processed', outcome='granted', account_id=account)
        return User(account, device_id, str(signed.device_secret), who, tokens, upload, finished.task_id, event_id)

    def keys(self, prefix: str) -> list[str]:
        listed = self.world.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return [item['Key'] for item in listed.get('Contents', [])]

    def account_items(self, account_id: str, prefix: str) -> list[dict[str, Any]]:
        return self.world.ddb.query(
            TableName=self.world.ledger_table,
            KeyConditionExpression='pk = :pk AND begins_with(sk, :prefix)',
            ExpressionAttributeValues={':pk': {'S': f'ACCT#{account_id}'}, ':prefix': {'S': prefix}},
            ConsistentRead=True,
        )['Items']


@pytest.fixture
def deletion(world: World) -> Deletion:
    return Deletion(world, create_table(world.ddb, 'EventsTable', f'events-{uuid.uuid4().hex[:8]}'))


def open_tasks(d: Deletion, account_id: str) -> tuple[str, str]:
    """A task running at the provider (its wait holding a token) and one still queued."""
    running = d.world.create(account_id, 'mock/slow')
    d.world.service.submit(d.world.step(running))
    d.world.service.await_provider(AwaitInput(task_id=running.task_id, account_id=account_id, token='wait-token'))
    queued = d.world.create(account_id, 'mock/image')
    return running.task_id, queued.task_id


def test_deleting_an_account_removes_what_it_left_and_keeps_a_balanced_ledger(deletion: Deletion):
    d, world = deletion, deletion.world
    # Given an account with sessions, a device, an identity, files, a payment event and two open tasks
    alice, bob = d.user(), d.user()
    running, queued = open_tasks(d, alice.account_id)
    assert world.balance(alice.account_id) == (10 + 30 - 4 - 8, 8)  # welcome 10, paid 30; an image (4); 2 held
    assert d.keys(f'outputs/{alice.account_id}/') and d.keys(f'uploads/{alice.account_id}/')

    # When she deletes her account (the request), then the queued purge runs
    state = d.request(alice.account_id)
    assert (state.status, d.queue.sent) == (DeletionStatus.DELETING, [(alice.account_id, False, 0)])
    # Then her tokens are refused at once, before the purge, and no new session opens
    with pytest.raises(InvalidToken):
        d.sessions.authenticate(alice.tokens.access_token)
    with pytest.raises(InvalidToken):
        d.sessions.refresh(alice.tokens.refresh_token)
    with pytest.raises(AccountDeleted):
        d.sessions.start(alice.account_id)
    report = d.purge().run(alice.account_id)

    # Her open tasks ended canceled and every credit held came back; the provider was asked to stop
    assert (report.tasks_ended, report.tasks_erased) == (2, 3)
    for task_id in (running, queued):
        task = world.task(task_id)
        assert (task.status, task.charged, task.refunded) == (TaskStatus.CANCELED, 0, task.held)
    assert world.workflow.resumed == ['wait-token']
    world.wait_provider(running)
    assert world.provider.get(running).status == 'canceled'
    assert world.balance(alice.account_id) == (10 + 30 - 4, 0)
    # and no task keeps her prompts, uploads or outputs (model, status and credits stay)
    finished = world.task(alice.finished_task)
    assert (finished.input, finished.outputs, finished.error) == ({}, (), None)
    assert (finished.status, finished.charged, finished.model_id) == (TaskStatus.SUCCEEDED, 4, 'mock/image')
    # Her outputs and uploads are gone from S3
    assert d.keys(f'outputs/{alice.account_id}/') == d.keys(f'uploads/{alice.account_id}/') == []
    assert report.objects_deleted == 2
    # Her device and identity belong to no account, and the account lists none
    assert d.devices.find(alice.device_id) is None and d.identities.account_of(alice.identity) is None
    assert d.account_items(alice.account_id, 'DEVICE#') == d.account_items(alice.account_id, 'IDENTITY#') == []
    assert (report.devices_released, report.identities_released) == (1, 1)
    # The raw body of her payment event is gone; its record (ids, amounts, no personal data) stays
    assert d.payments.raw_body('stripe', alice.event_id) is None
    record = d.payments.get_event('stripe', alice.event_id)
    assert record is not None and (record.status, record.account_id) == ('processed', alice.account_id)
    assert report.raw_payment_bodies_deleted == 1
    # The ledger keeps her account, entries, lots and holds, and they add up
    assert world.ledger.reconcile(alice.account_id).ok
    assert [e.kind for e in world.ledger.list_entries(alice.account_id).items][:2] == ['release', 'release']
    # The account is marked deleted, and a recheck is queued for after any task step in flight
    state = d.marks.state(alice.account_id)
    assert state is not None and state.status is DeletionStatus.DELETED
    assert d.queue.sent[-1] == (alice.account_id, True, RECHECK_DELAY_SECONDS)

    # And Bob's account is untouched
    d.sessions.authenticate(bob.tokens.access_token)
    assert d.devices.account_of(bob.device_id) == bob.account_id
    assert d.identities.account_of(bob.identity) == bob.account_id
    assert d.keys(f'uploads/{bob.account_id}/') == [bob.upload] and len(d.keys(f'outputs/{bob.account_id}/')) == 1
    assert world.task(bob.finished_task).input['prompt'] == 'a red fox'
    assert d.payments.raw_body('stripe', bob.event_id) is not None
    assert d.marks.state(bob.account_id) is None and world.ledger.reconcile(bob.account_id).ok


def test_the_recheck_and_any_later_run_find_nothing_left_and_change_nothing(deletion: Deletion):
    d, world = deletion, deletion.world
    alice = d.user()
    open_tasks(d, alice.account_id)
    d.request(alice.account_id)
    d.purge().run(alice.account_id)
    balance, entries = world.balance(alice.account_id), len(world.ledger.list_entries(alice.account_id).items)
    # When the recheck runs, and the request and purge come again
    again = d.purge().run(alice.account_id, recheck=True)
    d.request(alice.account_id)
    d.purge().run(alice.account_id)
    # Then there was nothing left to do, and nothing moved
    counts = again.as_dict()
    assert {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)} == {
        'api_keys_revoked': 0,
        'sessions_revoked': 0,
        'tasks_ended': 0,
        'tasks_erased': 0,
        'objects_deleted': 0,
        'devices_released': 0,
        'identities_released': 0,
        'raw_payment_bodies_deleted': 0,
    }
    assert world.balance(alice.account_id) == balance
    assert len(world.ledger.list_entries(alice.account_id).items) == entries
    assert world.ledger.reconcile(alice.account_id).ok
    # (a recheck queues no third run)
    assert [sent for sent in d.queue.sent if sent[1]] == [(alice.account_id, True, RECHECK_DELAY_SECONDS)] * 2


class FailingOnce:
    """S3 that fails the first deletion (a crash halfway through the purge)."""

    def __init__(self, media: Any) -> None:
        self._media = media
        self.failed = False

    def delete_prefix(self, prefix: str) -> int:
        if not self.failed:
            self.failed = True
            raise MediaDeletionFailed('S3 did not delete 1 object(s)')
        return int(self._media.delete_prefix(prefix))


def test_a_purge_that_failed_halfway_is_completed_by_the_next_run(deletion: Deletion):
    d, world = deletion, deletion.world
    alice = d.user()
    open_tasks(d, alice.account_id)
    d.request(alice.account_id)
    # Given a purge that ended its tasks, then failed at S3 (the queue will deliver the message again)
    media = FailingOnce(world.service.media)
    with pytest.raises(MediaDeletionFailed):
        d.purge(media=media).run(alice.account_id)
    state = d.marks.state(alice.account_id)
    assert state is not None and state.status is DeletionStatus.DELETING
    assert world.balance(alice.account_id)[1] == 0
    # When the message is delivered again
    report = d.purge(media=media).run(alice.account_id)
    # Then it does what was left, and the account is deleted
    assert (report.tasks_ended, report.objects_deleted, report.devices_released) == (0, 2, 1)
    assert d.keys(f'outputs/{alice.account_id}/') == d.keys(f'uploads/{alice.account_id}/') == []
    state = d.marks.state(alice.account_id)
    assert state is not None and state.status is DeletionStatus.DELETED
    assert world.ledger.reconcile(alice.account_id).ok


def test_a_deleted_accounts_device_and_identity_sign_up_anew_without_welcome_credits(deletion: Deletion):
    d, world = deletion, deletion.world
    alice = d.user()
    d.request(alice.account_id)
    # While the purge has not released her device yet, signing in with it does not reach the deleted account
    with pytest.raises(AccountDeleted):
        d.sessions.start(d.device_sign_in(alice.device_id, alice.device_secret).account_id)
    d.purge().run(alice.account_id)
    # Once released, the same device id opens a new, empty account: no second welcome
    again = d.device_sign_in(alice.device_id)
    assert again.account_id != alice.account_id and again.device_secret
    assert world.ledger.get_account(again.account_id).available == 0
    d.sessions.start(again.account_id)
    # So does her identity
    other = d.identity_sign_in(alice.identity)
    assert other not in {alice.account_id, again.account_id}
    assert world.ledger.get_account(other).available == 0
    # While a device never seen before still gets its welcome credits
    fresh = d.device_sign_in(f'device-{uuid.uuid4().hex}')
    assert world.ledger.get_account(fresh.account_id).available == WELCOME.credits
    # And a recheck of Alice's deletion leaves the device's new account alone
    d.purge().run(alice.account_id, recheck=True)
    assert d.devices.account_of(alice.device_id) == again.account_id
