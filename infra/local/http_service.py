"""A stand-in for an outside HTTP API, served on a daemon thread on 127.0.0.1 (the fakes' common part)."""

from __future__ import annotations

import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

#: Where the offline gateway lists the side services' URLs (infra/local only; no such route in AWS).
LOCAL_SERVICES_PATH = '/_local/services'


class LocalHTTPService:
    """Subclasses set :attr:`handler` (a request handler class that reads ``self.server_fake``)."""

    handler: ClassVar[type[BaseHTTPRequestHandler]]
    thread_name: ClassVar[str] = 'local-http-service'

    def __init__(self, host: str = '127.0.0.1', port: int = 0) -> None:
        self.host = host
        self.port = port
        self.base_url = ''
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Serve on a daemon thread; return the base URL."""
        handler = type(self.handler.__name__, (self.handler,), {'server_fake': self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.base_url = f'http://{self.host}:{int(self._server.server_address[1])}'
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def is_json(headers: Message) -> bool:
    """Whether a request says its body is JSON. Local-only endpoints require it: a page of another site can post
    ``text/plain`` or a form to 127.0.0.1 without asking, but not ``application/json`` (CORS preflight)."""
    media_type = (headers.get('Content-Type') or '').split(';', 1)[0].strip().lower()
    return media_type == 'application/json'


def same_origin(headers: Message, base_url: str) -> bool:
    """Whether a browser's POST comes from a page of ``base_url`` (no ``Origin``: not a browser, or same-origin
    in an old one; ``Origin: null``, e.g. a sandboxed page, is refused)."""
    origin = headers.get('Origin')
    return origin is None or origin.rstrip('/') == base_url.rstrip('/')
