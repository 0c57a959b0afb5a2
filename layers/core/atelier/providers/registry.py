"""Which providers are configured in this environment, and their adapters."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from atelier.catalog import Catalog, ModelSpec
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
    'runpod': 'provider-api-token-runpod',  # a RunPod API key, sent as `Authorization: Bearer <token>`
}
#: A RunPod endpoint id goes into the API's URL path: letters, digits, '-' and '_' only.
_ENDPOINT_ID = re.compile(r'[A-Za-z0-9_-]{1,64}')


class UnknownProvider(NotFound):
    code = 'unknown_provider'


class ProviderRegistry:
    """Provider adapters by name, built on first use (so a request pays only for the one it needs)."""

    def __init__(
        self,
        factories: dict[str, Callable[[], Provider]],
        *,
        models: dict[str, Callable[[ModelSpec], bool]] | None = None,
    ) -> None:
        self._factories = factories
        self._models = models or {}
        self._built: dict[str, Provider] = {}

    def offers(self, model: ModelSpec) -> bool:
        """Whether ``model``'s provider is configured here, and for that model (RunPod: an endpoint is named)."""
        if model.provider not in self._factories:
            return False
        check = self._models.get(model.provider)
        return check is None or check(model)

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
      user ``FAL_USER_ID`` when set;
    - ``runpod`` when ``settings.runpod_endpoints`` (``RUNPOD_ENDPOINTS``, JSON ``{"runpod/<model>": "<endpoint
      id>"}``) names an endpoint, against ``RUNPOD_API_BASE``: the mapping is the switch, and only the models it
      names are offered (:meth:`ProviderRegistry.offers`).

    Cog, Replicate, fal and RunPod keep their submissions in ``journal`` (default: the tasks table). Secrets are
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
    models: dict[str, Callable[[ModelSpec], bool]] = {}
    runpod_api_base = settings.runpod_api_base
    runpod_endpoints = _runpod_endpoints(settings.runpod_endpoints)
    if runpod_endpoints:

        def runpod() -> Provider:
            from atelier.providers.runpod.client import RunPodProvider

            return RunPodProvider(
                runpod_api_base,
                endpoints=runpod_endpoints,
                api_token=lambda: secret(API_TOKEN_NAMES['runpod']),
                journal=submissions(),
            )

        factories['runpod'] = runpod
        models['runpod'] = lambda model: model.id in runpod_endpoints
    return ProviderRegistry(factories, models=models)


def _runpod_endpoints(raw: str) -> dict[str, str]:
    """``RUNPOD_ENDPOINTS``: a JSON object of catalog model id -> RunPod endpoint id ('' = none)."""
    if not raw.strip():
        return {}
    parsed = json.loads(raw)
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _ENDPOINT_ID.fullmatch(v) for k, v in parsed.items()
    ):
        raise ValueError('RUNPOD_ENDPOINTS must be a JSON object of catalog model id -> RunPod endpoint id.')
    return dict(parsed)
