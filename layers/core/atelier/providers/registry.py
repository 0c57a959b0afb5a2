"""Which providers are configured in this environment, and their adapters."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from atelier.catalog import Catalog
from atelier.errors import NotFound
from atelier.providers.base import Provider

if TYPE_CHECKING:
    from atelier.config import Settings
    from atelier.providers.journal import SubmissionJournal

#: SSM secret names (under SECRETS_PREFIX) holding each provider's webhook secret.
WEBHOOK_SECRET_NAMES = {
    'mock': 'provider-webhook-secret-mock',
    'cog': 'provider-webhook-secret-cog',  # any random string: the key of the Cog webhook URL tokens
    'replicate': 'provider-webhook-secret-replicate',  # whsec_... from GET /v1/webhooks/default/secret
}
#: SSM secret names of the provider API tokens.
API_TOKEN_NAMES = {
    'replicate': 'provider-api-token-replicate',
    'fal': 'provider-api-token-fal',  # a fal API key, sent as `Authorization: Key <token>`
}


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


def configured_providers(
    settings: Settings,
    *,
    secret: Callable[[str], str],
    catalog: Catalog,
    journal: SubmissionJournal | None = None,
) -> ProviderRegistry:
    """The providers this environment can reach.

    - ``mock`` when ``settings.mock_provider_url`` (``MOCK_PROVIDER_URL``) is set;
    - ``cog`` when ``settings.cog_provider_url`` (``COG_PROVIDER_URL``) is set: one Cog server runs one model;
    - ``replicate`` when ``settings.replicate_enabled`` (``REPLICATE_ENABLED``): an explicit switch rather than
      "the token exists", so that no function reads SSM at cold start to learn which models to offer, and a
      missing token fails loudly instead of silently hiding the models;
    - ``fal`` when ``settings.fal_enabled`` (``FAL_ENABLED``), the same kind of switch, against
      ``FAL_API_BASE`` (fal's queue API) with webhooks verified by the keys at ``FAL_JWKS_URL``, for the fal
      user ``FAL_USER_ID`` when set.

    Cog, Replicate and fal keep their submissions in ``journal`` (default: the tasks table). Secrets are
    read when an adapter first needs them (a fal webhook needs no secret to be verified, only to fetch the
    result it announces).
    """
    factories: dict[str, Callable[[], Provider]] = {}
    mock_provider_url = settings.mock_provider_url
    if mock_provider_url:

        def mock() -> Provider:
            from atelier.providers.mock.client import MockProvider

            return MockProvider(
                mock_provider_url, webhook_secret=lambda: secret(WEBHOOK_SECRET_NAMES['mock']), catalog=catalog
            )

        factories['mock'] = mock
    tasks_table = settings.tasks_table

    def submissions() -> SubmissionJournal:
        from atelier.providers.journal import DynamoDBJournal

        return journal or DynamoDBJournal(tasks_table)

    cog_url = settings.cog_provider_url
    if cog_url:

        def cog() -> Provider:
            from atelier.providers.cog.client import CogProvider

            return CogProvider(
                cog_url,
                webhook_secret=lambda: secret(WEBHOOK_SECRET_NAMES['cog']),
                catalog=catalog,
                journal=submissions(),
            )

        factories['cog'] = cog
    replicate_api_base = settings.replicate_api_base
    if settings.replicate_enabled:

        def replicate() -> Provider:
            from atelier.providers.replicate.client import ReplicateProvider

            return ReplicateProvider(
                replicate_api_base,
                api_token=lambda: secret(API_TOKEN_NAMES['replicate']),
                webhook_secret=lambda: secret(WEBHOOK_SECRET_NAMES['replicate']),
                catalog=catalog,
                journal=submissions(),
            )

        factories['replicate'] = replicate
    fal_api_base, fal_jwks_url, fal_user_id = settings.fal_api_base, settings.fal_jwks_url, settings.fal_user_id
    if settings.fal_enabled:

        def fal() -> Provider:
            from atelier.providers.fal.client import FalProvider

            return FalProvider(
                fal_api_base,
                api_token=lambda: secret(API_TOKEN_NAMES['fal']),
                jwks_url=fal_jwks_url,
                user_id=fal_user_id,
                catalog=catalog,
                journal=submissions(),
            )

        factories['fal'] = fal
    return ProviderRegistry(factories)
