"""Which providers an environment offers, from its settings; secrets are read only when an adapter needs them."""

from __future__ import annotations

import pytest

from atelier.catalog import load_catalog
from atelier.config import Settings
from atelier.providers.cog.client import CogProvider
from atelier.providers.fal.client import FalProvider
from atelier.providers.journal import InMemoryJournal
from atelier.providers.registry import UnknownProvider, configured_providers
from atelier.providers.replicate.client import ReplicateProvider

BASE_ENV = {
    'STAGE': 'test',
    'LEDGER_TABLE': 'ledger',
    'TASKS_TABLE': 'tasks',
    'EVENTS_TABLE': 'events',
    'MEDIA_BUCKET': 'media',
    'TASK_QUEUE_URL': 'https://sqs.example/queue',
    'TASK_STATE_MACHINE_ARN': 'arn:aws:states:us-east-1:123456789012:stateMachine:tasks',
    'SECRETS_PREFIX': '/atelier/test/',
}


def registry(secrets_read: list[str], mock_url: str = '', **env: str):  # type: ignore[no-untyped-def]
    def secret(name: str) -> str:
        secrets_read.append(name)
        return 'whsec_c2VjcmV0' if 'replicate' in name else 'secret'

    return configured_providers(
        Settings.from_env({**BASE_ENV, 'MOCK_PROVIDER_URL': mock_url, **env}),
        secret=secret,
        catalog=load_catalog(),
        journal=InMemoryJournal(),
    )


def test_by_default_only_the_mock_is_offered_where_it_runs() -> None:
    assert registry([]).names == frozenset()
    assert registry([], mock_url='http://127.0.0.1:1').names == {'mock'}
    settings = Settings.from_env(BASE_ENV)
    assert (settings.cog_provider_url, settings.replicate_enabled) == ('', False)
    assert settings.replicate_api_base == 'https://api.replicate.com'


def test_a_cog_url_offers_the_cog_models() -> None:
    read: list[str] = []
    providers = registry(read, COG_PROVIDER_URL='http://127.0.0.1:5000')
    assert providers.names == {'cog'}
    assert {m.id for m in load_catalog().available(providers.names)} == {'cog/echo-image'}
    assert isinstance(providers.get('cog'), CogProvider)
    assert read == []  # the webhook secret is read on the first submit or webhook, not before


def test_the_replicate_switch_offers_the_replicate_models_with_lazy_secrets() -> None:
    read: list[str] = []
    providers = registry(read, REPLICATE_ENABLED='true', REPLICATE_API_BASE='http://127.0.0.1:9')
    assert providers.names == {'replicate'}
    assert {m.id for m in load_catalog().available(providers.names)} == {'replicate/sdxl'}
    adapter = providers.get('replicate')
    assert isinstance(adapter, ReplicateProvider)
    assert read == []
    with pytest.raises(UnknownProvider):
        providers.get('fal')


def test_the_fal_switch_offers_the_fal_models_and_reads_no_secret_before_it_calls_fal() -> None:
    # Given the defaults: fal is off, and points at the real fal when switched on
    settings = Settings.from_env(BASE_ENV)
    assert settings.fal_enabled is False
    assert (settings.fal_api_base, settings.fal_jwks_url) == (
        'https://queue.fal.run',
        'https://rest.alpha.fal.ai/.well-known/jwks.json',
    )
    # When it is switched on
    read: list[str] = []
    providers = registry(read, FAL_ENABLED='true', FAL_API_BASE='http://127.0.0.1:9')
    # Then the fal models are offered, and no secret was read to offer them
    assert providers.names == {'fal'}
    assert {m.id for m in load_catalog().available(providers.names)} == {'fal/flux-dev', 'fal/kling-video'}
    assert isinstance(providers.get('fal'), FalProvider)
    assert read == []
