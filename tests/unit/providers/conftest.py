"""A mock provider server on 127.0.0.1 (fast clock) and a webhook receiver to catch what it sends."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from atelier.providers.mock.server import MockProviderServer

SECRET = 'mock_atelier_local'


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    url: str = ''
    received: list[Received] = field(default_factory=list)
    #: HTTP statuses to answer, in order (then 200).
    answers: list[int] = field(default_factory=list)

    def wait_for(self, predicate: Callable[[Received], bool], timeout: float = 5.0) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for item in list(self.received):
                if predicate(item):
                    return item
            time.sleep(0.02)
        raise AssertionError(f'no matching webhook in {timeout}s; got {[r.json for r in self.received]}')


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    state = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
            state.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header('Content-Length', '0')
            self.end_headers()

    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f'http://127.0.0.1:{httpd.server_address[1]}/webhooks/providers/mock'
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def mock_provider(receiver: WebhookReceiver) -> Iterator[MockProviderServer]:
    server = MockProviderServer(webhook_url=receiver.url, webhook_secret=SECRET, time_scale=0.1)
    server.start()
    yield server
    server.stop()
