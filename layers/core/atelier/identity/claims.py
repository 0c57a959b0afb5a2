"""What an account claims in the ledger table (its devices and identities), and what is left when it lets go.

Devices and identities follow one pattern (``kind`` is ``DEVICE`` or ``IDENTITY``; ``digest`` the SHA-256 that
the backend keeps instead of the device id or the issuer and subject)::

    pk = {kind}#{digest}             sk = {kind}                the claim: which account it belongs to
    pk = ACCT#{account_id}           sk = {kind}#{digest}       the account's claims (for deletion)
    pk = WELCOMED#{kind}#{digest}    sk = WELCOMED              kept after the account is deleted

When an account is deleted its claims are released: the device or identity belongs to no account any more, so
its next sign-in opens a new, empty account. The ``WELCOMED`` marker remembers only that this digest had an
account, and so its welcome credits, once (no account id, no time), so deleting and signing up again cannot
farm them.
"""

from __future__ import annotations

import contextlib
from enum import StrEnum
from typing import Any


class ClaimKind(StrEnum):
    DEVICE = 'DEVICE'
    IDENTITY = 'IDENTITY'


def welcomed_key(kind: ClaimKind, digest: str) -> dict[str, dict[str, str]]:
    return {'pk': {'S': f'WELCOMED#{kind.value}#{digest}'}, 'sk': {'S': 'WELCOMED'}}


def was_welcomed(client: Any, table: str, kind: ClaimKind, digest: str) -> bool:
    """Whether this device or identity had its welcome credits with an account that was deleted since."""
    return 'Item' in client.get_item(TableName=table, Key=welcomed_key(kind, digest), ConsistentRead=True)


class AccountClaims:
    """Releases an account's devices and identities (DynamoDB adapter on the ledger table)."""

    def __init__(self, table_name: str, client: Any) -> None:
        self._table = table_name
        self._client = client

    def release_all(self, account_id: str, kind: ClaimKind) -> int:
        """Release every claim of ``kind`` of the account; returns how many it still had.

        Per claim, in an order that a crash at any point leaves resumable (the account's listing item goes
        last, so a retry finds the claim again): the welcome marker, the claim itself (only while it is still
        this account's: a retry after the device was taken by a new account leaves that one alone), then the
        listing item.
        """
        released = 0
        for digest in self._digests(account_id, kind):
            self._client.put_item(
                TableName=self._table,
                Item={**welcomed_key(kind, digest), 'type': {'S': 'welcomed'}},
            )
            # Claimed by another account since (a retry after the device signed up anew): not ours to release.
            with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
                self._client.delete_item(
                    TableName=self._table,
                    Key={'pk': {'S': f'{kind.value}#{digest}'}, 'sk': {'S': kind.value}},
                    ConditionExpression='attribute_not_exists(pk) OR account_id = :account',
                    ExpressionAttributeValues={':account': {'S': account_id}},
                )
            self._client.delete_item(
                TableName=self._table, Key={'pk': {'S': f'ACCT#{account_id}'}, 'sk': {'S': f'{kind.value}#{digest}'}}
            )
            released += 1
        return released

    def _digests(self, account_id: str, kind: ClaimKind) -> list[str]:
        digests: list[str] = []
        request: dict[str, Any] = {
            'TableName': self._table,
            'KeyConditionExpression': 'pk = :pk AND begins_with(sk, :prefix)',
            'ExpressionAttributeValues': {':pk': {'S': f'ACCT#{account_id}'}, ':prefix': {'S': f'{kind.value}#'}},
            'ProjectionExpression': 'sk',
            'ConsistentRead': True,
        }
        while True:
            page = self._client.query(**request)
            digests += [item['sk']['S'].split('#', 1)[1] for item in page.get('Items', [])]
            if 'LastEvaluatedKey' not in page:
                return digests
            request['ExclusiveStartKey'] = page['LastEvaluatedKey']
