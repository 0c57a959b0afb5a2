"""A client generated from ``/openapi.json`` (openapi-python-client, as a mobile or server team would) works
unmodified against the offline stack: sign in -> estimate -> create -> poll -> download -> ledger, with the
generated models only (no hand-parsed JSON)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, next_address

pytestmark = [pytest.mark.stack, pytest.mark.slow]

PACKAGE = 'atelier_generated_client'
FINAL = {'succeeded', 'failed', 'canceled', 'expired'}
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def client_package(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    root = tmp_path_factory.mktemp('generated')
    document = root / 'openapi.json'
    document.write_bytes(httpx.get(f'{stack.url}/openapi.json').content)
    bin_dir = Path(sys.executable).parent
    generate = [
        str(bin_dir / 'openapi-python-client'), 'generate', '--path', str(document),
        '--meta', 'none', '--output-path', str(root / PACKAGE),
    ]  # fmt: skip
    env = {**os.environ, 'PATH': os.pathsep.join([str(bin_dir), os.environ.get('PATH', '')])}  # its ruff hooks
    run = subprocess.run(generate, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0 and 'Warning' not in run.stdout + run.stderr, run.stdout + run.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f'{PACKAGE}.')]:
            del sys.modules[name]


def module(package: ModuleType, name: str) -> Any:
    return importlib.import_module(f'{package.__name__}.{name}')


def test_a_generated_client_signs_in_runs_a_task_downloads_it_and_reads_the_ledger(
    stack: Stack, client_package: ModuleType
) -> None:
    models = module(client_package, 'models')
    transport = {'transport': httpx.HTTPTransport(local_address=next_address())}
    anonymous = client_package.Client(base_url=stack.url, httpx_args=transport)

    # sign in
    session = module(client_package, 'api.identity.sign_in_device').sync(
        client=anonymous, body=models.DeviceSignInIn(device_id=f'generated-{uuid.uuid4().hex}')
    )
    assert isinstance(session, models.DeviceSessionOut), session
    stack.adjust(session.account_id, 20)
    signed_in = client_package.AuthenticatedClient(base_url=stack.url, token=session.access_token)

    # estimate
    request = models.MockImageTask(
        model=models.MockImageTaskModel('mock/image'), input_=models.MockImageInput(prompt='a red fox', num_images=2)
    )
    estimate = module(client_package, 'api.catalog.estimate_task').sync(client=signed_in, body=request)
    # (credits is a Python builtin: the generator names the field credits_)
    assert isinstance(estimate, models.Estimate) and estimate.credits_ == 8

    # create (202, the queued task)
    created = module(client_package, 'api.tasks.create_task').sync_detailed(
        client=signed_in, body=request, idempotency_key=uuid.uuid4().hex
    )
    assert created.status_code == 202 and isinstance(created.parsed, models.TaskView), created.content
    task_id = created.parsed.id

    # poll
    get_task = module(client_package, 'api.tasks.get_task')
    deadline = time.monotonic() + 60
    task = get_task.sync(client=signed_in, task_id=task_id)
    while task.status.value not in FINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        task = get_task.sync(client=signed_in, task_id=task_id)
    assert task.status.value == 'succeeded', task
    assert task.credits_.charged == 8

    # download
    assert len(task.outputs) == 2
    for output in task.outputs:
        image = httpx.get(output.url)
        assert image.status_code == 200 and image.content.startswith(PNG_SIGNATURE)
        assert output.size == len(image.content)

    # ledger: the hold took 8 from available into held, its capture spent those 8 held
    page = module(client_package, 'api.credits_.list_ledger_entries').sync(client=signed_in)
    assert isinstance(page, models.LedgerPage)
    task_entries = sorted((e.kind, e.amount, e.held_delta) for e in page.items if e.task_id == task_id)
    assert task_entries == [('capture', 0, -8), ('hold', -8, 8)]
    me = module(client_package, 'api.identity.get_me').sync(client=signed_in)
    assert (me.balance.available, me.balance.held) == (12, 0)
