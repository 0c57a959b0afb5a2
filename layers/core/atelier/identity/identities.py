"""Outside identities (an OIDC issuer + subject): each belongs to exactly one account, for good.

Items in the ledger table; the identity is stored only as a SHA-256 digest of ``issuer \\n subject`` (the
backend never needs it back; no email is stored)::

    pk = IDENTITY#{digest}   sk = IDENTITY     account_id, provider, linked_at
    pk = ACCT#{account_id}   sk = IDENTITY#{digest}   provider, linked_at   (the account's identities)

A deleted account's identities are released (:mod:`atelier.identity.claims`): signing in with one again opens
a new account, without welcome credits.

Rules (one account per person): signing in with an identity reaches its account, or opens one (with the
welcome credits, rate-limited like any sign-up). A signed-in account links an identity that belongs to no
account yet and keeps everything it has; linking an identity that already belongs to another account is
refused (409 ``identity_already_linked``): balances are never merged, because no one can tell which account
the credits, tasks and purchases should follow. To move to an identity that has its own account, sign in
with it (the device account stays where it is).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from atelier.errors import Conflict, DomainError, ErrorKind
from atelier.identity.claims import ClaimKind, was_welcomed
from atelier.identity.service import ClaimTaken, SignUpLimits, WelcomeGrant, new_account_id, open_new_account

if TYPE_CHECKING:
    from atelier.identity.oidc import VerifiedIdentity
    from atelier.ledger import Ledger


class IdentityAlreadyLinked(Conflict):
    code = 'identity_already_linked'


class IdentityBusy(DomainError):
    kind = ErrorKind.UNAVAILABLE
    code = 'identity_busy'


def identity_digest(identity: VerifiedIdentity) -> str:
    return hashlib.sha256(f'{identity.issuer}\n{identity.subject}'.encode()).hexdigest()


def _key(digest: str) -> dict[str, dict[str, str]]:
    return {'pk': {'S': f'IDENTITY#{digest}'}, 'sk': {'S': 'IDENTITY'}}


class IdentityDirectory:
    """DynamoDB adapter for identity -> account mappings."""

    def __init__(self, table_name: str, client: Any) -> None:
        self._table = table_name
        self._client = client

    @property
    def table(self) -> str:
        return self._table

    def account_of(self, identity: VerifiedIdentity) -> str | None:
        item = self._client.get_item(
            TableName=self._table, Key=_key(identity_digest(identity)), ConsistentRead=True
        ).get('Item')
        return item['account_id']['S'] if item else None

    def was_welcomed(self, identity: VerifiedIdentity) -> bool:
        """Whether the identity had welcome credits with an account that was deleted since."""
        return was_welcomed(self._client, self._table, ClaimKind.IDENTITY, identity_digest(identity))

    def claim_items(self, identity: VerifiedIdentity, account_id: str, now_iso: str) -> list[dict[str, Any]]:
        """TransactWriteItems ``Put``s giving the identity to the account (the first fails if it is taken)."""
        digest = identity_digest(identity)
        return [
            {
                'Put': {
                    'TableName': self._table,
                    'Item': {
                        **_key(digest),
                        'type': {'S': 'identity'},
                        'account_id': {'S': account_id},
                        'provider': {'S': identity.provider},
                        'linked_at': {'S': now_iso},
                    },
                    'ConditionExpression': 'attribute_not_exists(pk)',
                }
            },
            {
                'Put': {
                    'TableName': self._table,
                    'Item': {
                        'pk': {'S': f'ACCT#{account_id}'},
                        'sk': {'S': f'IDENTITY#{digest}'},
                        'type': {'S': 'account_identity'},
                        'provider': {'S': identity.provider},
                        'linked_at': {'S': now_iso},
                    },
                }
            },
        ]

    def link(self, identity: VerifiedIdentity, account_id: str, now_iso: str) -> None:
        """Give the identity to the account (again is fine); :class:`IdentityAlreadyLinked` if it has another."""
        try:
            self._client.transact_write_items(TransactItems=self.claim_items(identity, account_id, now_iso))
        except self._client.exceptions.TransactionCanceledException:
            owner = self.account_of(identity)
            if owner is None:  # cancelled for another reason (a concurrent transaction): the caller may retry
                raise IdentityBusy('The identity is being signed in elsewhere right now; retry.') from None
            if owner != account_id:
                raise IdentityAlreadyLinked(
                    'This identity already belongs to another account; sign in with it instead.'
                ) from None


def sign_in_identity(
    identity: VerifiedIdentity,
    *,
    ledger: Ledger,
    identities: IdentityDirectory,
    source_ip: str,
    limits: SignUpLimits,
    welcome: WelcomeGrant,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    make_account_id: Callable[[], str] = new_account_id,
) -> str:
    """The identity's account, opened (with the welcome credits) on its first sign-in.

    Raises
    ------
    TooManySignUps
        A new account would exceed the sign-up limits.
    """
    account_id = identities.account_of(identity)
    if account_id is not None:
        return account_id
    candidate, moment = make_account_id(), now()
    if identities.was_welcomed(identity):  # its account was deleted: a new one, but no second welcome
        welcome = WelcomeGrant()
    claims = identities.claim_items(identity, candidate, moment.isoformat())
    try:
        open_new_account(
            candidate, claims, ledger=ledger, source_ip=source_ip, limits=limits, welcome=welcome, moment=moment
        )
    except ClaimTaken:  # the same identity signed in concurrently: its account is the one
        owner = identities.account_of(identity)
        if owner is None:  # pragma: no cover - the item that failed the condition exists
            raise
        return owner
    return candidate
