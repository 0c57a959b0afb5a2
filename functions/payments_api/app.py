"""Selling credits on the web: the pack and plan list, and Stripe Checkout Sessions."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.api import create_resolver, resolve
from atelier.api.auth import authenticated_account
from atelier.api.contract import BEARER, BODY, answers
from atelier.config import get_settings
from atelier.observability import logger
from atelier.payments.models import CheckoutIn, CheckoutOut, PacksOut
from atelier.payments.service import payments_service

app = create_resolver()


@app.get(
    '/v1/packs',
    tags=['payments'],
    security=[{'bearer': []}],
    operation_id='listPacks',
    summary='The credit packs and plans for sale',
    responses=answers({200: 'Packs and plans'}, BEARER),
)
def handle_list_packs(account_id: Annotated[str, Depends(authenticated_account)]) -> PacksOut:
    return payments_service(get_settings()).packs()


@app.post(
    '/v1/checkout',
    tags=['payments'],
    security=[{'bearer': []}],
    operation_id='createCheckout',
    summary='Buy a pack or a plan: a Stripe Checkout page to open',
    responses=answers({200: 'The Checkout Session: open its url'}, BODY, BEARER, 404, 409),
)
def handle_checkout(
    body: CheckoutIn,
    account_id: Annotated[str, Depends(authenticated_account)],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias='idempotency-key',
            min_length=1,
            max_length=255,
            description='Optional: a retry with the same key answers the same session (else one per minute).',
        ),
    ] = None,
) -> CheckoutOut:
    return payments_service(get_settings()).checkout(account_id, body, idempotency_key=idempotency_key)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
