"""A webhook receiver on 127.0.0.1: what a provider would call back, caught for a test to inspect."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar


@dataclass
class Hook:
    """One webhook delivery as received."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Catches webhooks on ``url`` (any path below it); answers ``answers`` in order, then 200."""

    url: str = ''
    received: list[Hook] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)

    def wait_for(self, predicate: Callable[[Hook], bool], timeout: float = 10.0) -> Hook:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for hook in list(self.received):
                if predicate(hook):
                    return hook
            time.sleep(0.02)
        raise AssertionError(f'no matching webhook in {timeout}s; got {[h.body[:200] for h in self.received]}')


R = TypeVar('R', bound=WebhookReceiver)


@contextmanager
def receiving(state: R, path: str = '') -> Iterator[R]:
    """Serve ``state`` on a free port of 127.0.0.1 (its ``url`` ends with ``path``) until the block ends."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
            state.received.append(Hook(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header('Content-Length', '0')
            self.end_headers()

    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f'http://127.0.0.1:{httpd.server_address[1]}{path}'
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
