"""A test-only function that overruns its timeout or its memory (tests/support/strict_stack.py deploys it)."""

import time
from typing import Any


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    if isinstance(event, dict) and event.get('allocate_mb'):
        hoard = bytearray(int(event['allocate_mb']) * 1024 * 1024)
        for offset in range(0, len(hoard), 4096):
            hoard[offset] = 1  # touch every page, so that it is resident
        time.sleep(2)
        return {'allocated': len(hoard)}
    time.sleep(float(event.get('sleep', 5)) if isinstance(event, dict) else 5)
    return {'statusCode': 200, 'body': 'finished'}
