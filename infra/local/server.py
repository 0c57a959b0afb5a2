"""The whole offline product: the stack, its side services and the gateway, started in order.

The gateway's socket is bound first so that its URL (where providers send webhooks) can be passed
to the template as a parameter, exactly as a deployed stack is told its public URL.
"""

from __future__ import annotations

from typing import Any

from infra.local.gateway import Gateway
from infra.local.stack import OfflineStack


class LocalServer:
    """``with LocalServer(port=0) as server: server.url`` — everything up on 127.0.0.1."""

    def __init__(self, *, port: int = 3000, schedule_seconds: float = 5.0, **stack_options: Any) -> None:
        self.port = port
        self.schedule_seconds = schedule_seconds
        self.stack_options = stack_options
        self.stack: OfflineStack
        self.gateway: Gateway
        self.url = ''

    def start(self) -> LocalServer:
        self.stack = OfflineStack(schedule_seconds=self.schedule_seconds, **self.stack_options)
        self.gateway = Gateway(self.stack, port=self.port)
        self.url = self.gateway.url
        self.stack.start()
        self.gateway.start()
        return self

    def stop(self) -> None:
        self.gateway.stop()
        self.stack.stop()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
