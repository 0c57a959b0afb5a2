"""Which account a device belongs to: one item per device in the ledger table.

Device ids are stored only as SHA-256 digests: they identify a phone, and the backend never needs
them back.
"""

from __future__ import annotations

import hashlib
from typing import Any


def device_key(device_id: str) -> dict[str, dict[str, str]]:
    digest = hashlib.sha256(device_id.encode('utf-8')).hexdigest()
    return {'pk': {'S': f'DEVICE#{digest}'}, 'sk': {'S': 'DEVICE'}}


class DeviceDirectory:
    """DynamoDB adapter for device -> account mappings."""

    def __init__(self, table_name: str, client: Any) -> None:
        self._table = table_name
        self._client = client

    def account_of(self, device_id: str) -> str | None:
        item = self._client.get_item(TableName=self._table, Key=device_key(device_id), ConsistentRead=True).get('Item')
        return item['account_id']['S'] if item else None

    def claim_item(self, device_id: str, account_id: str, now_iso: str) -> dict[str, Any]:
        """A TransactWriteItems ``Put`` that maps the device to the account, once and for all."""
        return {
            'Put': {
                'TableName': self._table,
                'Item': {
                    **device_key(device_id),
                    'type': {'S': 'device'},
                    'account_id': {'S': account_id},
                    'created_at': {'S': now_iso},
                },
                'ConditionExpression': 'attribute_not_exists(pk)',
            }
        }
