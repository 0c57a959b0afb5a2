"""Which account a device belongs to, and the device's secret: one item per device in the ledger table.

Device ids are stored only as SHA-256 digests (they identify a phone, and the backend never needs them
back), and device secrets only as SHA-256 digests of the secret (256 random bits: a plain hash is enough).

    pk = DEVICE#{sha256(device_id)}   sk = DEVICE     account_id, secret_hash, created_at
    pk = ACCT#{account_id}           sk = DEVICE#{sha256(device_id)}   (the account's devices, for deletion)

A deleted account's devices are released (:mod:`atelier.identity.claims`): a released device id signs up
again as a new account, without welcome credits.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from atelier.identity.claims import ClaimKind, was_welcomed


def device_digest(device_id: str) -> str:
    return hashlib.sha256(device_id.encode('utf-8')).hexdigest()


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode('utf-8')).hexdigest()


def device_key(device_id: str) -> dict[str, dict[str, str]]:
    return {'pk': {'S': f'DEVICE#{device_digest(device_id)}'}, 'sk': {'S': 'DEVICE'}}


@dataclass(frozen=True)
class Device:
    account_id: str
    secret_hash: str | None  # None: a device from before device secrets (it adopts one at its next sign-in)

    def accepts(self, secret: str | None) -> bool:
        if self.secret_hash is None or not secret:
            return False
        return hmac.compare_digest(secret_digest(secret), self.secret_hash)


class DeviceDirectory:
    """DynamoDB adapter for device -> account mappings."""

    def __init__(self, table_name: str, client: Any) -> None:
        self._table = table_name
        self._client = client

    @property
    def table(self) -> str:
        return self._table

    def find(self, device_id: str) -> Device | None:
        item = self._client.get_item(TableName=self._table, Key=device_key(device_id), ConsistentRead=True).get('Item')
        if not item:
            return None
        return Device(item['account_id']['S'], item['secret_hash']['S'] if 'secret_hash' in item else None)

    def was_welcomed(self, device_id: str) -> bool:
        """Whether the device had welcome credits with an account that was deleted since."""
        return was_welcomed(self._client, self._table, ClaimKind.DEVICE, device_digest(device_id))

    def account_of(self, device_id: str) -> str | None:
        device = self.find(device_id)
        return device.account_id if device else None

    def claim_items(self, device_id: str, account_id: str, now_iso: str, secret: str) -> list[dict[str, Any]]:
        """TransactWriteItems ``Put``s that map the device to the account, once and for all (the first one's
        condition is what fails when the device is taken)."""
        digest = device_digest(device_id)
        return [
            {
                'Put': {
                    'TableName': self._table,
                    'Item': {
                        **device_key(device_id),
                        'type': {'S': 'device'},
                        'account_id': {'S': account_id},
                        'secret_hash': {'S': secret_digest(secret)},
                        'created_at': {'S': now_iso},
                    },
                    'ConditionExpression': 'attribute_not_exists(pk)',
                }
            },
            {
                'Put': {
                    'TableName': self._table,
                    'Item': {
                        'pk': {'S': f'ACCT#{account_id}'},
                        'sk': {'S': f'DEVICE#{digest}'},
                        'type': {'S': 'account_device'},
                        'created_at': {'S': now_iso},
                    },
                }
            },
        ]

    def adopt_secret(self, device_id: str, account_id: str, secret: str) -> bool:
        """Give a device from before device secrets its secret (and its account-side listing item, which such
        devices lack); False if it has a secret already (a race lost)."""
        update = {
            'Update': {
                'TableName': self._table,
                'Key': device_key(device_id),
                'UpdateExpression': 'SET secret_hash = :hash',
                'ConditionExpression': 'attribute_exists(pk) AND attribute_not_exists(secret_hash)',
                'ExpressionAttributeValues': {':hash': {'S': secret_digest(secret)}},
            }
        }
        listing = {
            'Put': {
                'TableName': self._table,
                'Item': {
                    'pk': {'S': f'ACCT#{account_id}'},
                    'sk': {'S': f'DEVICE#{device_digest(device_id)}'},
                    'type': {'S': 'account_device'},
                },
            }
        }
        try:
            self._client.transact_write_items(TransactItems=[update, listing])
        except self._client.exceptions.TransactionCanceledException:
            return False
        return True
