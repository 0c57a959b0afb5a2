from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from atelier.api import create_resolver, resolve
from atelier.api.auth import authenticated_account
from atelier.config import AUTH_TOKEN_SECRET, get_settings
from atelier.identity.service import WelcomeGrant, get_profile, sign_in_device
from atelier.observability import logger
from atelier.wiring import devices, ledger

app = create_resolver()


class DeviceSignIn(BaseModel):
    model_config = ConfigDict(extra='forbid')
    device_id: str = Field(min_length=16, max_length=128, description='A stable id of the device, 16-128 chars.')


class SessionOut(BaseModel):
    account_id: str
    token: str
    expires_in: int


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


@app.post('/v1/auth/device', tags=['identity'])
def handle_device_sign_in(body: DeviceSignIn) -> SessionOut:
    settings = get_settings()
    session = sign_in_device(
        body.device_id,
        ledger=ledger(),
        devices=devices(),
        token_key=settings.secret(AUTH_TOKEN_SECRET),
        token_ttl_seconds=settings.token_ttl_seconds,
        welcome=WelcomeGrant(settings.welcome_credits, settings.welcome_credits_valid_for),
    )
    return SessionOut(account_id=session.account_id, token=session.token, expires_in=session.expires_in)


@app.get('/v1/me', tags=['identity'], security=[{'bearer': []}])
def handle_get_me(account_id: Annotated[str, Depends(authenticated_account)]) -> MeOut:
    profile = get_profile(account_id, ledger=ledger())
    account = profile.account
    return MeOut(
        account_id=account.account_id,
        plan=account.plan,
        balance=BalanceOut(available=account.available, held=account.held),
        limits=LimitsOut(max_concurrent_tasks=profile.max_concurrent_tasks),
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
