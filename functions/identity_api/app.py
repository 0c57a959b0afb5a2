from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import Depends, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from atelier.api import create_resolver, resolve
from atelier.api.auth import account_read, authenticated_account, authenticated_session
from atelier.api.contract import BEARER, BEARER_OR_KEY, BODY, answers
from atelier.config import get_settings
from atelier.identity.deletion import request_deletion
from atelier.identity.identities import sign_in_identity
from atelier.identity.service import SignUpLimits, WelcomeGrant, get_profile, sign_in_device
from atelier.identity.sessions import SessionTokens
from atelier.identity.tokens import Claims
from atelier.observability import logger
from atelier.wiring import (
    api_keys,
    deletion_marks,
    deletion_queue,
    devices,
    identities,
    ledger,
    oidc_verifier,
    sessions,
)

app = create_resolver()


class DeviceSignInIn(BaseModel):
    model_config = ConfigDict(extra='forbid', strict=True)  # JSON types as sent: 0 is not false
    device_id: str = Field(min_length=16, max_length=128, description='A stable id of the device, 16-128 chars.')
    device_secret: str | None = Field(
        default=None,
        max_length=128,
        description='The secret the first sign-in of this device id answered; required on every later one.',
    )


class OidcSignInIn(BaseModel):
    model_config = ConfigDict(extra='forbid', strict=True)  # JSON types as sent: 0 is not false
    provider: str = Field(min_length=1, max_length=64, description='An enabled provider id (GET /v1/auth/providers).')
    id_token: str = Field(min_length=1, max_length=16_384, description="The provider's OpenID Connect ID token.")
    nonce: str | None = Field(
        default=None, max_length=512, description='The nonce given to the provider (Apple), compared exactly.'
    )


class ProviderOut(BaseModel):
    id: str
    issuer: str
    client_ids: list[str]


class ProvidersOut(BaseModel):
    providers: list[ProviderOut]


class LinkOut(BaseModel):
    account_id: str
    provider: str


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra='forbid', strict=True)  # JSON types as sent: 0 is not false
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutIn(BaseModel):
    model_config = ConfigDict(extra='forbid', strict=True)  # JSON types as sent: 0 is not false
    all: bool = Field(default=False, description='Sign out every session of the account, not only this one.')


class SessionOut(BaseModel):
    access_token: str
    token_type: str = 'Bearer'
    expires_in: int = Field(description='Seconds until the access token expires; then use the refresh token.')
    refresh_token: str = Field(description='Single use: each refresh answers a new one.')
    account_id: str


class DeviceSessionOut(SessionOut):
    device_secret: str | None = Field(
        default=None, description='Only on the first sign-in of a device id: keep it; later sign-ins need it.'
    )


class LogoutOut(BaseModel):
    revoked_sessions: int


class BalanceOut(BaseModel):
    available: int
    held: int


class LimitsOut(BaseModel):
    max_concurrent_tasks: int


class MeOut(BaseModel):
    account_id: str
    plan: str
    balance: BalanceOut
    limits: LimitsOut


class DeletionOut(BaseModel):
    account_id: str
    status: Literal['deleting', 'deleted'] = Field(
        description='deleting: under way (the tokens already answer 401); deleted: purged.'
    )
    requested_at: str = Field(description='When the deletion was first requested (ISO 8601, UTC).')


def _session_out(tokens: SessionTokens) -> dict[str, Any]:
    return {
        'access_token': tokens.access_token,
        'token_type': 'Bearer',
        'expires_in': tokens.expires_in,
        'refresh_token': tokens.refresh_token,
        'account_id': tokens.account_id,
    }


@app.post(
    '/v1/auth/device',
    tags=['identity'],
    operation_id='signInDevice',
    summary='Sign in (and up) with a device id: an anonymous account of this device',
    responses=answers(
        {200: 'A session; on the first sign-in of this device id, its device_secret'}, BODY, 401, 409, 429, 503
    ),
)
def handle_device_sign_in(body: DeviceSignInIn) -> DeviceSessionOut:
    settings = get_settings()
    signed_in = sign_in_device(
        body.device_id,
        body.device_secret,
        ledger=ledger(),
        devices=devices(),
        source_ip=app.current_event.request_context.http.source_ip,
        limits=SignUpLimits(settings.signups_per_address_per_hour, settings.signups_per_minute),
        welcome=WelcomeGrant(settings.welcome_credits, settings.welcome_credits_valid_for),
    )
    tokens = sessions().start(signed_in.account_id)
    return DeviceSessionOut(**_session_out(tokens), device_secret=signed_in.device_secret)


@app.get(
    '/v1/auth/providers',
    tags=['identity'],
    operation_id='listAuthProviders',
    summary='The OpenID Connect providers enabled for sign-in (Apple, Google, Firebase...)',
    responses=answers({200: 'The enabled providers'}),
)
def handle_list_providers() -> ProvidersOut:
    return ProvidersOut(
        providers=[
            ProviderOut(id=p.id, issuer=p.issuer, client_ids=list(p.client_ids)) for p in oidc_verifier().providers
        ]
    )


@app.post(
    '/v1/auth/oidc',
    tags=['identity'],
    operation_id='signInWithOidc',
    summary="Sign in (and up) with a provider's ID token",
    responses=answers({200: "A session of the identity's account"}, BODY, 401, 404, 409, 429, 503),
)
def handle_oidc_sign_in(body: OidcSignInIn) -> SessionOut:
    """Sign in with an ID token of an enabled provider: its identity's account (opened on first sign-in)."""
    settings = get_settings()
    identity = oidc_verifier().verify(body.provider, body.id_token, body.nonce)
    account_id = sign_in_identity(
        identity,
        ledger=ledger(),
        identities=identities(),
        source_ip=app.current_event.request_context.http.source_ip,
        limits=SignUpLimits(settings.signups_per_address_per_hour, settings.signups_per_minute),
        welcome=WelcomeGrant(settings.welcome_credits, settings.welcome_credits_valid_for),
    )
    return SessionOut(**_session_out(sessions().start(account_id)))


@app.post(
    '/v1/auth/link',
    tags=['identity'],
    security=[{'bearer': []}],
    operation_id='linkIdentity',
    summary="Link a provider's identity to the signed-in account",
    responses=answers({200: 'Linked'}, BODY, BEARER, 404, 409),
)
def handle_link(account_id: Annotated[str, Depends(authenticated_account)], body: OidcSignInIn) -> LinkOut:
    """Link an identity to the signed-in account (which keeps its credits); 409 if it belongs to another."""
    identity = oidc_verifier().verify(body.provider, body.id_token, body.nonce)
    identities().link(identity, account_id, datetime.now(UTC).isoformat())
    return LinkOut(account_id=account_id, provider=identity.provider)


@app.post(
    '/v1/auth/refresh',
    tags=['identity'],
    operation_id='refreshSession',
    summary='Trade a refresh token (once) for a new access token and refresh token',
    responses=answers({200: 'The renewed session'}, BODY, 401, 409, 503),
)
def handle_refresh(body: RefreshIn) -> SessionOut:
    return SessionOut(**_session_out(sessions().refresh(body.refresh_token)))


@app.post(
    '/v1/auth/logout',
    tags=['identity'],
    security=[{'bearer': []}],
    operation_id='signOut',
    summary='Sign out this session, or every session of the account',
    responses=answers({200: 'Signed out'}, BODY, BEARER),
)
def handle_logout(
    claims: Annotated[Claims, Depends(authenticated_session)], body: Annotated[LogoutIn | None, Body()] = None
) -> LogoutOut:
    """Sign out this session (no body), or every session of the account (``{"all": true}``)."""
    everywhere = body is not None and body.all
    return LogoutOut(revoked_sessions=sessions().end(claims, everywhere=everywhere))


@app.get(
    '/v1/me',
    tags=['identity'],
    security=[{'bearer': []}, {'apiKey': []}],
    operation_id='getMe',
    summary='The account: its plan, balance and limits',
    responses=answers({200: 'The account'}, BEARER_OR_KEY),
)
def handle_get_me(account_id: Annotated[str, Depends(account_read)]) -> MeOut:
    profile = get_profile(account_id, ledger=ledger())
    account = profile.account
    return MeOut(
        account_id=account.account_id,
        plan=account.plan,
        balance=BalanceOut(available=account.available, held=account.held),
        limits=LimitsOut(max_concurrent_tasks=profile.max_concurrent_tasks),
    )


@app.delete(
    '/v1/me',
    tags=['identity'],
    security=[{'bearer': []}],
    operation_id='deleteMe',
    summary='Delete the account and everything of it',
    responses=answers({202: 'Deletion under way'}, BEARER),
)
def handle_delete_me(account_id: Annotated[str, Depends(authenticated_account)]) -> Response[DeletionOut]:
    """Delete the account: its sessions and tokens end now; tasks, files, devices and identities follow."""
    state = request_deletion(
        account_id, queue=deletion_queue(), marks=deletion_marks(), sessions=sessions(), api_keys=api_keys()
    )
    body = DeletionOut(account_id=state.account_id, status=state.status.value, requested_at=state.requested_at)
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=body.model_dump(mode='json'))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
