"""A stand-in for an outside HTTP API, served on a daemon thread on 127.0.0.1 (the fakes' common part)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar


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
