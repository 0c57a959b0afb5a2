"""The OpenAPI document is the contract: a schema fuzzer (schemathesis) runs every operation of ``/openapi.json``
against the offline stack, signed in, and every check must hold: no server error, no response that breaks its
schema, no status the document does not list, no schema-valid request refused and no invalid one accepted,
authentication enforced, and the links between operations followed (its stateful phase).

Statuses that answer a valid request about the world rather than its shape are accepted for valid data:
402 (no credit left: the run spends it), 404 (an id that names nothing), 409, 429 (limits), and 400 on the two
listings for a ``cursor`` this server never issued (no schema can say which strings it issued) and on the webhooks
for a body their provider never sends (the document describes any JSON object; each provider's format is its own).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = int(os.environ.get('ATELIER_CONTRACT_EXAMPLES', '10'))
VALID_BUT_REFUSED = ['2xx', '401', '402', '403', '404', '409', '429']

CONFIG = f"""
[warnings]
fail-on = ["unsupported_regex"]  # a pattern the fuzzer cannot generate for is a pattern not tested

[checks.positive_data_acceptance]
expected-statuses = {VALID_BUT_REFUSED!r}

[[operations]]
include-operation-id = ["listTasks", "listLedgerEntries"]
checks.positive_data_acceptance.expected-statuses = {[*VALID_BUT_REFUSED, '400']!r}

[[operations]]
include-operation-id = ["receiveProviderWebhook", "receiveStripeWebhook", "receiveRevenueCatWebhook"]
checks.positive_data_acceptance.expected-statuses = {[*VALID_BUT_REFUSED, '400']!r}
"""
#: Operations whose every answer may be 401 in this run: RevenueCat's webhook (the run does not send its secret).
UNAUTHENTICATED_OPERATIONS = 1


def test_every_operation_keeps_the_documented_contract(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / 'schemathesis.toml'
    config.write_text(CONFIG)
    command = [
        sys.executable, '-m', 'schemathesis.cli', '--config-file', str(config), 'run', f'{stack.url}/openapi.json',
        '--checks', 'all', '--max-examples', str(MAX_EXAMPLES), '--seed', '1',
        '--no-color', '--request-timeout', '30',
    ]  # fmt: skip
    env = {
        **os.environ,
        'SCHEMATHESIS_HOOKS': 'tests.e2e.contract.schemathesis_hooks',
        'ATELIER_CONTRACT_URL': stack.url,
        'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]),
    }
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report
    assert 'Operations:' in report and 'Tested: 0' not in report, report
    refused = re.search(r'Authentication failed: (\d+) operation', report)
    assert refused is None or int(refused.group(1)) <= UNAUTHENTICATED_OPERATIONS, report  # else sign-in is broken
    assert 'Skipped:' not in report.split('API Operations:', 1)[-1].split('Test Phases:', 1)[0], report
