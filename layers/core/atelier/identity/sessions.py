"""Sessions: one per sign-in, holding a rotating refresh token; access tokens name their session.

Items in the ledger table, in the account's partition (next to the account item, so every session of an
account is one strongly consistent ``Query`` away, for "sign out everywhere" and account deletion; the
ledger's own reads all select their item kinds by sort-key prefix)::

    pk = ACCT#{account_id}   sk = SESSION#{session_id}
    refresh_hash   SHA-256 of the current refresh secret (the secret itself is never stored)
    generation     how many times the refresh token rotated
    created_at, refreshed_at, revoked_at?, revoked_reason?
    ttl            epoch seconds: refresh tokens die unused after ``refresh_ttl_seconds`` (DynamoDB TTL removes
                   the item some time later; reads treat it as gone at once)

    pk = ACCT#{account_id}   sk = ROTATED#{session_id}#{sha256(secret)}   ttl (the session's)

One small ``ROTATED#`` item per rotated refresh token (written in the rotation's transaction): a reuse is
recognised however many rotations later, for the life of the session, at one read.

A refresh token is ``rt1.{account_id}.{session_id}.{secret}``. Using it rotates it (a conditional write on
the current hash: of two concurrent refreshes with the same token one wins, the other is told it was
already used). Presenting a *rotated* token again revokes the whole session: either the client or a
thief holds a copy, and the session can no longer tell which (OAuth 2.0 Security BCP, refresh token reuse
detection). A token that was never issued is simply refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from atelier.errors import Conflict, DomainError, ErrorKind
from atelier.identity.tokens import Claims, InvalidToken, Keyring, issue_token, verify_token

#: The ledger table's TTL attribute (sessions, rate-limit windows: items that may vanish).
TTL = 'ttl'
_PREFIX = 'rt1'
_ID = re.compile(r'[A-Za-z0-9_-]{1,128}')


class SessionRevoked(InvalidToken):
    code = 'session_revoked'


class RefreshTokenReused(InvalidToken):
    code = 'refresh_token_reused'


class AccountDeleted(Conflict):
    """A sign-in reached an account that is deleted (its device or identity is not released yet)."""

    code = 'account_deleted'


class SessionsUnavailable(DomainError):
    """The session store failed (throttled, unreachable); retrying is safe."""

    kind = ErrorKind.UNAVAILABLE
    code = 'sessions_unavailable'


#: Errors that are answers (a condition failed), not failures of the store.
_DECISIONS = frozenset({'ConditionalCheckFailedException', 'TransactionCanceledException'})


@contextlib.contextmanager
def _store_call() -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        if exc.response.get('Error', {}).get('Code') in (
            'ConditionalCheckFailedException',
            'TransactionCanceledException',
        ):
            raise
        raise SessionsUnavailable('Sessions are unavailable right now; retry.') from exc


@dataclass(frozen=True)
class NewSession:
    account_id: str
    session_id: str
    refresh_token: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode('utf-8')).hexdigest()


def _s(value: str) -> dict[str, str]:
    return {'S': value}


def _n(value: int) -> dict[str, str]:
    return {'N': str(value)}


def _rotated_key(account_id: str, session_id: str, secret_hash: str) -> dict[str, dict[str, str]]:
    return {'pk': _s(f'ACCT#{account_id}'), 'sk': _s(f'ROTATED#{session_id}#{secret_hash}')}


def session_key(account_id: str, session_id: str) -> dict[str, dict[str, str]]:
    return {'pk': _s(f'ACCT#{account_id}'), 'sk': _s(f'SESSION#{session_id}')}


def parse_refresh_token(token: object) -> tuple[str, str, str]:
    """``(account_id, session_id, secret)`` of a well-formed refresh token; :class:`InvalidToken` otherwise."""
    parts = token.split('.') if isinstance(token, str) else []
    if len(parts) != 4 or parts[0] != _PREFIX or not all(_ID.fullmatch(p) for p in parts[1:]):
        raise InvalidToken('The refresh token is malformed.', code='invalid_refresh_token')
    return parts[1], parts[2], parts[3]


class SessionStore:
    """DynamoDB adapter of sessions (in the ledger table)."""

    def __init__(
        self,
        table_name: str,
        client: Any,
        *,
        refresh_ttl_seconds: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._table = table_name
        self._client = client
        self._refresh_ttl = refresh_ttl_seconds
        self._clock = clock

    # ---------------------------------------------------------------- sign-in
    def open(self, account_id: str) -> NewSession:
        """A new session of ``account_id`` and its first refresh token.

        Written together with a check that the account is not deleted (``deleted_at`` on its account item), in
        one transaction: a sign-in that raced an account deletion either opened its session before the
        deletion's mark (and the deletion revokes it) or opens none.

        Raises
        ------
        AccountDeleted
            The account is deleted (or being deleted).
        """
        session_id = f'ses_{secrets.token_hex(10)}'
        secret = secrets.token_urlsafe(32)
        now = self._clock()
        session = {
            **session_key(account_id, session_id),
            'type': _s('session'),
            'account_id': _s(account_id),
            'refresh_hash': _s(_hash(secret)),
            'generation': _n(0),
            'created_at': _s(now.isoformat()),
            'refreshed_at': _s(now.isoformat()),
            TTL: _n(int(now.timestamp()) + self._refresh_ttl),
        }
        try:
            with _store_call():
                self._client.transact_write_items(
                    TransactItems=[
                        {
                            'Put': {
                                'TableName': self._table,
                                'Item': session,
                                'ConditionExpression': 'attribute_not_exists(pk)',
                            }
                        },
                        {
                            'ConditionCheck': {
                                'TableName': self._table,
                                'Key': {'pk': _s(f'ACCT#{account_id}'), 'sk': _s('ACCOUNT')},
                                'ConditionExpression': 'attribute_not_exists(deleted_at)',
                            }
                        },
                    ]
                )
        except self._client.exceptions.TransactionCanceledException as exc:
            reasons = exc.response.get('CancellationReasons') or []
            if len(reasons) > 1 and reasons[1].get('Code') == 'ConditionalCheckFailed':
                raise AccountDeleted(
                    'This account was deleted. Its devices and identities are released within moments; sign in '
                    'again to start a new account.',
                    details={'retry_after_seconds': 5},
                ) from None
            raise
        return NewSession(account_id, session_id, _token(account_id, session_id, secret))

    # ---------------------------------------------------------------- use
    def is_active(self, account_id: str, session_id: str) -> bool:
        """Whether the session exists, is not revoked and has not expired (checked on every request)."""
        with _store_call():
            item = self._client.get_item(
                TableName=self._table, Key=session_key(account_id, session_id), ConsistentRead=True
            ).get('Item')
        return item is not None and 'revoked_at' not in item and not self._expired(item)

    def rotate(self, refresh_token: str) -> NewSession:
        """Trade a refresh token for the next one of the same session.

        Raises
        ------
        InvalidToken
            Malformed, unknown, expired.
        SessionRevoked
            The session was signed out (or revoked after a reuse).
        RefreshTokenReused
            The token was already rotated: the session is revoked now.
        """
        account_id, session_id, secret = parse_refresh_token(refresh_token)
        with _store_call():
            return self._rotate(account_id, session_id, secret)

    def _rotate(self, account_id: str, session_id: str, secret: str) -> NewSession:
        key = session_key(account_id, session_id)
        item = self._client.get_item(TableName=self._table, Key=key, ConsistentRead=True).get('Item')
        if item is None or self._expired(item):
            raise InvalidToken('The refresh token is not valid; sign in again.', code='invalid_refresh_token')
        presented = _hash(secret)
        if 'revoked_at' in item:
            raise SessionRevoked('This session was signed out; sign in again.')
        current = item['refresh_hash']['S']
        if not hmac.compare_digest(presented, current):
            rotated = self._client.get_item(
                TableName=self._table, Key=_rotated_key(account_id, session_id, presented), ConsistentRead=True
            ).get('Item')
            if rotated is not None:
                self._revoke(key, 'refresh_token_reused')
                raise RefreshTokenReused('This refresh token was already used; the session is now signed out.')
            raise InvalidToken('The refresh token is not valid; sign in again.', code='invalid_refresh_token')
        new_secret = secrets.token_urlsafe(32)
        now = self._clock()
        expires = _n(int(now.timestamp()) + self._refresh_ttl)
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        'Update': {
                            'TableName': self._table,
                            'Key': key,
                            'UpdateExpression': (
                                'SET refresh_hash = :new, generation = generation + :one, refreshed_at = :now, '
                                '#ttl = :expires'
                            ),
                            'ConditionExpression': 'refresh_hash = :current AND attribute_not_exists(revoked_at)',
                            'ExpressionAttributeNames': {'#ttl': TTL},
                            'ExpressionAttributeValues': {
                                ':new': _s(_hash(new_secret)),
                                ':one': _n(1),
                                ':now': _s(now.isoformat()),
                                ':expires': expires,
                                ':current': _s(current),
                            },
                        }
                    },
                    {
                        'Put': {
                            'TableName': self._table,
                            'Item': {
                                **_rotated_key(account_id, session_id, current),
                                'type': _s('rotated_refresh_token'),
                                TTL: expires,
                            },
                        }
                    },
                ]
            )
        except self._client.exceptions.TransactionCanceledException:
            # Another request rotated (or revoked) it between our read and write: that one won, this token is spent.
            self._revoke(key, 'refresh_token_reused')
            raise RefreshTokenReused('This refresh token was already used; the session is now signed out.') from None
        return NewSession(account_id, session_id, _token(account_id, session_id, new_secret))

    # ---------------------------------------------------------------- sign-out
    def revoke(self, account_id: str, session_id: str, reason: str = 'logout') -> None:
        with _store_call():
            self._revoke(session_key(account_id, session_id), reason)

    def revoke_all(self, account_id: str, reason: str = 'logout_all') -> int:
        """Revoke every open session of the account; returns how many were open."""
        count = 0
        with _store_call():
            for item in self._sessions(account_id):
                if 'revoked_at' not in item:
                    self._revoke({'pk': item['pk'], 'sk': item['sk']}, reason)
                    count += 1
        return count

    def _sessions(self, account_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        request: dict[str, Any] = {
            'TableName': self._table,
            'KeyConditionExpression': 'pk = :pk AND begins_with(sk, :prefix)',
            'ExpressionAttributeValues': {':pk': _s(f'ACCT#{account_id}'), ':prefix': _s('SESSION#')},
            'ConsistentRead': True,
        }
        while True:
            page = self._client.query(**request)
            items.extend(page.get('Items', []))
            if 'LastEvaluatedKey' not in page:
                return items
            request['ExclusiveStartKey'] = page['LastEvaluatedKey']

    def _revoke(self, key: dict[str, Any], reason: str) -> None:
        # Gone or already revoked: revoked either way.
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                TableName=self._table,
                Key=key,
                UpdateExpression='SET revoked_at = :now, revoked_reason = :reason',
                ConditionExpression='attribute_exists(pk) AND attribute_not_exists(revoked_at)',
                ExpressionAttributeValues={':now': _s(self._clock().isoformat()), ':reason': _s(reason)},
            )

    def _expired(self, item: dict[str, Any]) -> bool:
        return int(item[TTL]['N']) <= self._clock().timestamp()


def _token(account_id: str, session_id: str, secret: str) -> str:
    return f'{_PREFIX}.{account_id}.{session_id}.{secret}'


# ---------------------------------------------------------------- the session service


@dataclass(frozen=True)
class SessionTokens:
    """What every sign-in and refresh answers."""

    account_id: str
    access_token: str
    expires_in: int
    refresh_token: str


class Sessions:
    """Sign-in sessions: access tokens (``atelier.identity.tokens``) over the :class:`SessionStore`.

    ``keyring`` is called when a token is first issued or checked, so that functions which never do
    never read the token secret.
    """

    def __init__(
        self,
        store: SessionStore,
        keyring: Callable[[], Keyring],
        *,
        access_ttl_seconds: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._keyring = keyring
        self._access_ttl = access_ttl_seconds
        self._clock = clock

    def start(self, account_id: str) -> SessionTokens:
        """A new session of the account (a sign-in)."""
        return self._tokens(self._store.open(account_id))

    def refresh(self, refresh_token: str) -> SessionTokens:
        """The next tokens of the refresh token's session (the refresh token rotates)."""
        return self._tokens(self._store.rotate(refresh_token))

    def authenticate(self, access_token: str) -> Claims:
        """The claims of a valid access token whose session is still open; ``InvalidToken`` otherwise."""
        claims = verify_token(access_token, keyring=self._keyring(), now=self._clock().timestamp())
        if not self._store.is_active(claims.account_id, claims.session_id):
            raise SessionRevoked('This session was signed out; sign in again.')
        return claims

    def end(self, claims: Claims, *, everywhere: bool = False) -> int:
        """Sign out this session, or every session of the account; returns how many were open."""
        if everywhere:
            return self._store.revoke_all(claims.account_id)
        self._store.revoke(claims.account_id, claims.session_id)
        return 1

    def end_all(self, account_id: str, reason: str) -> int:
        return self._store.revoke_all(account_id, reason)

    def _tokens(self, session: NewSession) -> SessionTokens:
        access = issue_token(
            session.account_id,
            session.session_id,
            keyring=self._keyring(),
            ttl_seconds=self._access_ttl,
            now=self._clock().timestamp(),
        )
        return SessionTokens(session.account_id, access, self._access_ttl, session.refresh_token)
