"""A real Cog server (``infra/local/cog_server.py``) on 127.0.0.1 for the session, and a webhook receiver.

Cog runs one prediction at a time: the ``cog`` fixture cancels what a test left running and waits until the
server is idle again, so tests never see each other's predictions.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from infra.local.cog_server import CogModelServer
from tests.support.webhooks import Hook, WebhookReceiver, receiving

COG_SECRET = 'cog_atelier_test'


@dataclass
class Receiver(WebhookReceiver):
    """Catches Cog's prediction webhooks."""

    def final(self, prediction_id: str, timeout: float = 10.0) -> Hook:
        final = {'succeeded', 'failed', 'canceled'}
        return self.wait_for(lambda h: h.json.get('id') == prediction_id and h.json.get('status') in final, timeout)

    def of(self, prediction_id: str) -> list[Hook]:
        return [h for h in list(self.received) if h.json.get('id') == prediction_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving(Receiver()) as state:
        yield state


@dataclass
class CogServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    #: Prediction ids the current test started (canceled after it, if it left one running).
    started: list[str] = field(default_factory=list)

    def track(self, prediction_id: str) -> str:
        self.started.append(prediction_id)
        return prediction_id

    def health(self) -> str:
        try:
            return str(httpx.get(f'{self.url}/health-check', timeout=2).json().get('status'))
        except (httpx.HTTPError, ValueError):
            return 'UNREACHABLE'

    def wait_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.health()) != 'READY':
            assert time.monotonic() < deadline, f'the Cog server is still {status}'
            time.sleep(0.02)


@pytest.fixture(scope='session')
def cog_server() -> Iterator[CogServer]:
    """``python -m cog.server.http`` on a free port, started once per session (per xdist worker)."""
    model_server = CogModelServer()
    url = model_server.start()
    assert model_server.process is not None
    try:
        yield CogServer(url, model_server.process, model_server.log)
    finally:
        model_server.stop()


@pytest.fixture
def cog(cog_server: CogServer) -> Iterator[CogServer]:
    """The session's Cog server, idle before and after the test (what a test left running is canceled)."""
    cog_server.wait_idle()
    cog_server.started.clear()
    yield cog_server
    for prediction_id in cog_server.started:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(f'{cog_server.url}/predictions/{prediction_id}/cancel', timeout=2)
    cog_server.wait_idle()
