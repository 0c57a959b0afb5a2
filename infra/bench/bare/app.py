"""The reference for infra.bench.offline_coldstart: a handler that imports only boto3 and answers at once."""

from typing import Any

import boto3  # noqa: F401 - imported for its cost, as every real handler does


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return {'statusCode': 200, 'headers': {'content-type': 'application/json'}, 'body': '{"status":"ok"}'}
