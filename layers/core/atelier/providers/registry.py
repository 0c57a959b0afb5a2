"""Which providers are configured in this environment, and their adapters."""

from __future__ import annotations

from collections.abc import Callable

from atelier.catalog import Catalog
from atelier.errors import NotFound
from atelier.providers.base import Provider

#: SSM secret names (under SECRETS_PREFIX) holding each provider's webhook secret.
WEBHOOK_SECRET_NAMES = {'mock': 'provider-webhook-secret-mock'}


class UnknownProvider(NotFound):
    code = 'unknown_provider'


class ProviderRegistry:
    """Provider adapters by name, built on first use (so a request pays only for the one it needs)."""

    def __init__(self, factories: dict[str, Callable[[], Provider]]) -> None:
        self._factories = factories
        self._built: dict[str, Provider] = {}

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._factories)

    def get(self, name: str) -> Provider:
        if name not in self._factories:
            raise UnknownProvider(f'There is no provider {name!r} here.')
        if name not in self._built:
            self._built[name] = self._factories[name]()
        return self._built[name]


def configured_providers(*, mock_provider_url: str, secret: Callable[[str], str], catalog: Catalog) -> ProviderRegistry:
    """The providers this environment can reach: ``mock`` when ``mock_provider_url`` is set.

    fal.ai and Replicate models are in the catalog already; their adapters are later work, so their
    models are not offered yet.
    """
    factories: dict[str, Callable[[], Provider]] = {}
    if mock_provider_url:

        def mock() -> Provider:
            from atelier.providers.mock.client import MockProvider

            return MockProvider(mock_provider_url, webhook_secret=secret(WEBHOOK_SECRET_NAMES['mock']), catalog=catalog)

        factories['mock'] = mock
    return ProviderRegistry(factories)
