"""A mock provider server on 127.0.0.1 (fast clock) and a webhook receiver to catch what it sends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from atelier.providers.mock.server import MockProviderServer
from tests.support.webhooks import WebhookReceiver, receiving

SECRET = 'mock_atelier_local'


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with receiving(WebhookReceiver(), '/webhooks/providers/mock') as state:
        yield state


@pytest.fixture
def mock_provider(receiver: WebhookReceiver) -> Iterator[MockProviderServer]:
    server = MockProviderServer(webhook_url=receiver.url, webhook_secret=SECRET, time_scale=0.1)
    server.start()
    yield server
    server.stop()
