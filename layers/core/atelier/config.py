"""Settings: one pydantic model, read once per cold start by the handler and passed down.

Resource names come from the template (``Globals.Function.Environment``). Secrets never do: they
live in SSM Parameter Store under ``SECRETS_PREFIX`` (``/atelier/{stage}/``) as SecureStrings and
are fetched on first use, then cached for the life of the execution environment.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: Secret names under SECRETS_PREFIX. The offline stack seeds them with documented local defaults.
AUTH_TOKEN_SECRET = 'auth-token-secret'
STRIPE_WEBHOOK_SECRET = 'stripe-webhook-secret'
STRIPE_API_KEY = 'stripe-api-key'
REVENUECAT_WEBHOOK_AUTH = 'revenuecat-webhook-auth'
REVENUECAT_API_KEY = 'revenuecat-api-key'  # secret key of the RevenueCat REST API v1 (GET /subscribers)


class Settings(BaseModel):
    """Everything a handler needs to know about its environment."""

    model_config = ConfigDict(frozen=True, extra='ignore')

    stage: str = Field(alias='STAGE')
    ledger_table: str = Field(alias='LEDGER_TABLE')
    tasks_table: str = Field(alias='TASKS_TABLE')
    events_table: str = Field(alias='EVENTS_TABLE')
    media_bucket: str = Field(alias='MEDIA_BUCKET')
    task_queue_url: str = Field(alias='TASK_QUEUE_URL')
    task_state_machine_arn: str = Field(alias='TASK_STATE_MACHINE_ARN')
    account_deletion_queue_url: str = Field(default='', alias='ACCOUNT_DELETION_QUEUE_URL')
    secrets_prefix: str = Field(alias='SECRETS_PREFIX')
    # identity: sessions and sign-up limits (atelier.identity)
    access_token_ttl_seconds: int = Field(default=900, alias='ACCESS_TOKEN_TTL_SECONDS', gt=0, le=24 * 3600)
    refresh_token_ttl_days: int = Field(default=30, alias='REFRESH_TOKEN_TTL_DAYS', gt=0, le=400)
    signups_per_address_per_hour: int = Field(default=20, alias='SIGNUPS_PER_ADDRESS_PER_HOUR', gt=0)
    signups_per_minute: int = Field(default=600, alias='SIGNUPS_PER_MINUTE', gt=0)
    oidc_providers: str = Field(default='', alias='OIDC_PROVIDERS')  # JSON list, atelier.identity.oidc
    welcome_credits: int = Field(default=0, alias='WELCOME_CREDITS', ge=0)
    welcome_credits_days: int = Field(default=30, alias='WELCOME_CREDITS_DAYS', gt=0)
    public_api_url: str = Field(default='', alias='PUBLIC_API_URL')
    mock_provider_url: str = Field(default='', alias='MOCK_PROVIDER_URL')
    task_sweep_grace_seconds: int = Field(default=60, alias='TASK_SWEEP_GRACE_SECONDS', ge=0)

    # payments (Stripe, RevenueCat)
    stripe_api_base: str = Field(default='', alias='STRIPE_API_BASE')  # '' = the real Stripe API
    payments_live_mode: bool = Field(default=False, alias='PAYMENTS_LIVE_MODE')  # Stripe livemode / RC PRODUCTION
    payments_sandbox_accounts: str = Field(default='', alias='PAYMENTS_SANDBOX_ACCOUNTS')  # comma-separated testers
    checkout_success_url: str = Field(
        default='https://example.com/checkout/success?session_id={CHECKOUT_SESSION_ID}', alias='CHECKOUT_SUCCESS_URL'
    )
    checkout_cancel_url: str = Field(default='https://example.com/checkout/cancel', alias='CHECKOUT_CANCEL_URL')
    stripe_webhook_tolerance_seconds: int = Field(default=300, alias='STRIPE_WEBHOOK_TOLERANCE_SECONDS', ge=0)
    revenuecat_api_base: str = Field(default='', alias='REVENUECAT_API_BASE')  # '' = the real RevenueCat API
    raw_event_retention_days: int = Field(default=400, alias='RAW_EVENT_RETENTION_DAYS', gt=0)  # raw bodies' TTL

    # AI providers beside the mock (atelier.providers.registry)
    cog_provider_url: str = Field(default='', alias='COG_PROVIDER_URL')  # '' = no Cog server, no cog/* models
    replicate_enabled: bool = Field(default=False, alias='REPLICATE_ENABLED')  # offers the replicate/* models
    replicate_api_base: str = Field(default='https://api.replicate.com', alias='REPLICATE_API_BASE')
    fal_enabled: bool = Field(default=False, alias='FAL_ENABLED')  # offers the fal/* models
    fal_api_base: str = Field(default='https://queue.fal.run', alias='FAL_API_BASE')  # fal's queue API
    fal_jwks_url: str = Field(default='https://rest.alpha.fal.ai/.well-known/jwks.json', alias='FAL_JWKS_URL')
    fal_user_id: str = Field(default='', alias='FAL_USER_ID')  # the only fal user whose webhooks count ('' = any)
    # RunPod serverless: JSON {"runpod/<model>": "<endpoint id>"}; '' = no runpod/* models
    runpod_endpoints: str = Field(default='', alias='RUNPOD_ENDPOINTS')
    runpod_api_base: str = Field(default='https://api.runpod.ai', alias='RUNPOD_API_BASE')

    # where outputs may be fetched from (atelier.storage.output_policy)
    output_hosts: str = Field(default='', alias='OUTPUT_HOSTS')  # JSON {"provider": ["host", "*.domain"]}
    output_local_hosts: str = Field(default='', alias='OUTPUT_LOCAL_HOSTS')  # comma-separated: http, private ok
    output_max_bytes: int = Field(default=200 * 1024**2, alias='OUTPUT_MAX_BYTES', gt=0)

    @property
    def welcome_credits_valid_for(self) -> timedelta:
        return timedelta(days=self.welcome_credits_days)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        return cls.model_validate(dict(os.environ if environ is None else environ))

    def secret(self, name: str) -> str:
        """The decrypted value of secret ``name``, cached for ``SECRET_MAX_AGE_SECONDS`` per execution
        environment (so a changed secret, e.g. a rotated token key, is in use everywhere within that time)."""
        parameter_name = self.secrets_prefix + name
        cached = _secrets.get(parameter_name)
        now = time.monotonic()
        if cached is None or now - cached[1] >= SECRET_MAX_AGE_SECONDS:
            cached = (_fetch_secret(parameter_name), now)
            _secrets[parameter_name] = cached
        return cached[0]


@cache
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings.from_env()


#: How long a fetched secret is used before it is read again.
SECRET_MAX_AGE_SECONDS = 300.0
_secrets: dict[str, tuple[str, float]] = {}


def clear_secrets() -> None:
    """Forget every fetched secret (tests)."""
    _secrets.clear()


def _fetch_secret(parameter_name: str) -> str:
    from atelier.aws import client

    response: dict[str, Any] = client('ssm').get_parameter(Name=parameter_name, WithDecryption=True)
    return str(response['Parameter']['Value'])
