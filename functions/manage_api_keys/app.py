"""Ops: create, list and revoke an account's API keys (run from the Lambda console).

Test events: tests/events/identity/api_key_{create,list,revoke}.json. A created key is in the answer once
and never again (only its hash is kept): hand it to the app's server operator then.
"""

from typing import Annotated, Any, Literal

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, RootModel

from atelier.identity.api_keys import SCOPES, ApiKey
from atelier.observability import logger
from atelier.wiring import api_keys, ledger


class _Request(BaseModel):
    model_config = ConfigDict(extra='forbid')
    account_id: str = Field(min_length=1, max_length=128)


class CreateKey(_Request):
    action: Literal['create']
    name: str = Field(min_length=1, max_length=100, description="What the key is for, e.g. the app's server.")
    scopes: list[str] = Field(min_length=1, description=f'Some of {sorted(SCOPES)}.')


class ListKeys(_Request):
    action: Literal['list']


class RevokeKey(_Request):
    action: Literal['revoke']
    key_id: str = Field(min_length=1, max_length=64)


class ApiKeyRequest(RootModel[Annotated[CreateKey | ListKeys | RevokeKey, Field(discriminator='action')]]):
    pass


def _view(key: ApiKey) -> dict[str, Any]:
    return {
        'key_id': key.key_id,
        'name': key.name,
        'scopes': list(key.scopes),
        'prefix': key.prefix,
        'created_at': key.created_at,
        'revoked_at': key.revoked_at,
    }


@logger.inject_lambda_context
@event_parser(model=ApiKeyRequest)
def lambda_handler(event: ApiKeyRequest, context: LambdaContext) -> dict[str, Any]:
    request = event.root
    if isinstance(request, CreateKey):
        ledger().get_account(request.account_id)  # a clear "no account" before anything is written
        created = api_keys().create(request.account_id, name=request.name, scopes=request.scopes)
        logger.info('api key created', account_id=request.account_id, key_id=created.details.key_id)
        return {'api_key': created.key, **_view(created.details)}
    if isinstance(request, RevokeKey):
        revoked = api_keys().revoke(request.account_id, request.key_id)
        logger.info('api key revoked', account_id=request.account_id, key_id=request.key_id)
        return _view(revoked)
    return {'keys': [_view(key) for key in api_keys().list(request.account_id)]}
