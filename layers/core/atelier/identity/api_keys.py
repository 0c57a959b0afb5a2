"""API keys for an app's own servers: ``X-API-Key``, one account each, limited by scopes.

Ops create (the key is shown once), list and revoke keys with ``ManageApiKeysFunction``. A key is
``ak_{key_id}_{secret}``; only its SHA-256 is stored (it carries 256 random bits, so a plain hash is enough).
Items in the ledger table::

    pk = APIKEY#{sha256(key)}   sk = APIKEY           account_id, key_id, scopes, revoked_at?   (lookup per request)
    pk = ACCT#{account_id}      sk = APIKEY#{key_id}   name, scopes, prefix, created_at, revoked_at?, hash

A key works on the routes whose scope it carries and nowhere else: a route that takes no API key answers
401 to one, a key without the route's scope gets 403 ``insufficient_scope``, a revoked or unknown key 401.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from atelier.errors import Forbidden, InvalidInput, NotFound, Unauthorized

#: What a key may be allowed to do, by route (see ``atelier.api.auth``).
SCOPES: dict[str, str] = {
    'account:read': 'GET /v1/me',
    'models:read': 'GET /v1/models, POST /v1/estimates',
    'tasks:read': 'GET /v1/tasks, GET /v1/tasks/{task_id}',
    'tasks:write': 'POST /v1/tasks, POST /v1/tasks/{task_id}/cancel',
    'uploads:write': 'POST /v1/uploads',
    'ledger:read': 'GET /v1/ledger',
}
_KEY = re.compile(r'ak_([0-9a-f]{16})_[A-Za-z0-9_-]{43}')


class InvalidApiKey(Unauthorized):
    code = 'invalid_api_key'


class InsufficientScope(Forbidden):
    code = 'insufficient_scope'


class ApiKeyNotFound(NotFound):
    code = 'api_key_not_found'


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    account_id: str
    name: str
    scopes: tuple[str, ...]
    prefix: str  # the first characters, to recognise a key in a list
    created_at: str
    revoked_at: str | None = None


@dataclass(frozen=True)
class NewApiKey:
    key: str  # shown once
    details: ApiKey


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode('utf-8')).hexdigest()


def _s(value: str) -> dict[str, str]:
    return {'S': value}


class ApiKeys:
    """DynamoDB adapter of API keys (in the ledger table)."""

    def __init__(
        self, table_name: str, client: Any, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._table = table_name
        self._client = client
        self._clock = clock

    # ---------------------------------------------------------------- ops
    def create(self, account_id: str, *, name: str, scopes: Collection[str]) -> NewApiKey:
        unknown = sorted(set(scopes) - SCOPES.keys())
        if not scopes or unknown:
            raise InvalidInput(
                f'scopes must be some of {sorted(SCOPES)}' + (f'; unknown: {unknown}' if unknown else ''),
                details={'field': 'scopes'},
            )
        key_id = secrets.token_hex(8)
        key = f'ak_{key_id}_{secrets.token_urlsafe(32)}'
        now = self._clock().isoformat()
        ordered = sorted(set(scopes))
        details = ApiKey(key_id, account_id, name, tuple(ordered), key[:11], now)
        digest = key_digest(key)
        scope_set = {'SS': ordered}
        self._client.transact_write_items(
            TransactItems=[
                {
                    'ConditionCheck': {  # keys belong to accounts that exist and are not deleted
                        'TableName': self._table,
                        'Key': {'pk': _s(f'ACCT#{account_id}'), 'sk': _s('ACCOUNT')},
                        'ConditionExpression': 'attribute_exists(pk) AND attribute_not_exists(deleted_at)',
                    }
                },
                {
                    'Put': {
                        'TableName': self._table,
                        'Item': {
                            'pk': _s(f'APIKEY#{digest}'),
                            'sk': _s('APIKEY'),
                            'type': _s('api_key'),
                            'account_id': _s(account_id),
                            'key_id': _s(key_id),
                            'scopes': scope_set,
                        },
                        'ConditionExpression': 'attribute_not_exists(pk)',
                    }
                },
                {
                    'Put': {
                        'TableName': self._table,
                        'Item': {
                            'pk': _s(f'ACCT#{account_id}'),
                            'sk': _s(f'APIKEY#{key_id}'),
                            'type': _s('account_api_key'),
                            'name': _s(name),
                            'scopes': scope_set,
                            'prefix': _s(details.prefix),
                            'created_at': _s(now),
                            'hash': _s(digest),
                        },
                    }
                },
            ]
        )
        return NewApiKey(key, details)

    def list(self, account_id: str) -> list[ApiKey]:
        request: dict[str, Any] = {
            'TableName': self._table,
            'KeyConditionExpression': 'pk = :pk AND begins_with(sk, :prefix)',
            'ExpressionAttributeValues': {':pk': _s(f'ACCT#{account_id}'), ':prefix': _s('APIKEY#')},
            'ConsistentRead': True,
        }
        keys: list[ApiKey] = []
        while True:
            page = self._client.query(**request)
            keys += [_listed(account_id, item) for item in page.get('Items', [])]
            if 'LastEvaluatedKey' not in page:
                return keys
            request['ExclusiveStartKey'] = page['LastEvaluatedKey']

    def revoke(self, account_id: str, key_id: str) -> ApiKey:
        """Revoke a key (again is fine); it stops working at once."""
        item = self._client.get_item(
            TableName=self._table, Key={'pk': _s(f'ACCT#{account_id}'), 'sk': _s(f'APIKEY#{key_id}')}
        ).get('Item')
        if item is None:
            raise ApiKeyNotFound(f'No API key {key_id} for account {account_id}.')
        if 'revoked_at' in item:
            return _listed(account_id, item)
        now = _s(self._clock().isoformat())
        lookup = {'pk': _s(f'APIKEY#{item["hash"]["S"]}'), 'sk': _s('APIKEY')}
        for key in (lookup, {'pk': item['pk'], 'sk': item['sk']}):
            with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
                self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression='SET revoked_at = :now',
                    ConditionExpression='attribute_exists(pk) AND attribute_not_exists(revoked_at)',
                    ExpressionAttributeValues={':now': now},
                )
        return _listed(account_id, {**item, 'revoked_at': now})

    def revoke_all(self, account_id: str, reason: str = 'revoked') -> int:
        """Revoke every key of the account (account deletion); returns how many were active."""
        active = [key for key in self.list(account_id) if key.revoked_at is None]
        for key in active:
            self.revoke(account_id, key.key_id)
        return len(active)

    # ---------------------------------------------------------------- requests
    def authorize(self, key: str, scope: str) -> str:
        """The account of an active key that carries ``scope``.

        Raises
        ------
        InvalidApiKey
            Malformed, unknown or revoked.
        InsufficientScope
            The key does not carry ``scope``.
        """
        if not _KEY.fullmatch(key):
            raise InvalidApiKey('The API key is not valid.')
        item = self._client.get_item(
            TableName=self._table,
            Key={'pk': _s(f'APIKEY#{key_digest(key)}'), 'sk': _s('APIKEY')},
            ConsistentRead=True,  # a revoked key stops at once
        ).get('Item')
        if item is None or 'revoked_at' in item:
            raise InvalidApiKey('The API key is not valid.')
        if scope not in item['scopes']['SS']:
            raise InsufficientScope(f'This API key does not carry the scope {scope}.', details={'scope': scope})
        return str(item['account_id']['S'])


def _listed(account_id: str, item: dict[str, Any]) -> ApiKey:
    return ApiKey(
        key_id=item['sk']['S'].removeprefix('APIKEY#'),
        account_id=account_id,
        name=item['name']['S'],
        scopes=tuple(sorted(item['scopes']['SS'])),
        prefix=item['prefix']['S'],
        created_at=item['created_at']['S'],
        revoked_at=item['revoked_at']['S'] if 'revoked_at' in item else None,
    )
