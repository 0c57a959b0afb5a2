"""A real Cog model server (Replicate's open-source prediction server, coglet) on 127.0.0.1.

Runs the tiny predictor in ``cog_predictor/`` without Docker, so the ``cog`` provider adapter is tested
against the real thing, offline and in the tests. Stopped by its process group (coglet runs a worker).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PREDICTOR_DIR = Path(__file__).with_name('cog_predictor')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return int(sock.getsockname()[1])


class CogModelServer:
    """``python -m cog.server.http`` for ``predictor_dir`` on a free port: ``start()`` returns its URL."""

    def __init__(self, predictor_dir: Path = PREDICTOR_DIR, *, port: int = 0, ready_timeout: float = 30.0) -> None:
        self.predictor_dir = predictor_dir
        self.port = port or free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(tempfile.mkstemp(prefix='cog-server-', suffix='.log')[1])

    def health(self) -> str:
        try:
            return str(httpx.get(f'{self.url}/health-check', timeout=2).json().get('status'))
        except (httpx.HTTPError, ValueError):
            return 'UNREACHABLE'

    def start(self) -> str:
        env = {
            **os.environ,
            'PATH': str(Path(sys.executable).parent) + os.pathsep + os.environ.get('PATH', ''),
            'COG_PREDICT_TYPE_STUB': 'predict.py:Predictor',
            'PORT': str(self.port),
        }
        with self.log.open('wb') as out:
            self.process = subprocess.Popen(
                [sys.executable, '-m', 'cog.server.http', '--host', '127.0.0.1'],
                cwd=self.predictor_dir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: coglet's worker stops with it
            )
        deadline = time.monotonic() + self.ready_timeout
        while self.health() != 'READY':
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f'the Cog server did not become ready:\n{self.log.read_text()[-3000:]}')
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        self.process = None
        self.log.unlink(missing_ok=True)
