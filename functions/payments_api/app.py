"""Selling credits on the web: the pack and plan list, and Stripe Checkout Sessions."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.api import create_resolver, resolve
from atelier.api.auth import authenticated_account
from atelier.config import get_settings
from atelier.observability import logger
from atelier.payments.models import CheckoutIn, CheckoutOut, PacksOut
from atelier.payments.service import payments_service

app = create_resolver()


@app.get('/v1/packs', tags=['payments'], security=[{'bearer': []}])
def handle_list_packs(account_id: Annotated[str, Depends(authenticated_account)]) -> PacksOut:
    return payments_service(get_settings()).packs()


@app.post('/v1/checkout', tags=['payments'], security=[{'bearer': []}])
def handle_checkout(body: CheckoutIn, account_id: Annotated[str, Depends(authenticated_account)]) -> CheckoutOut:
    idempotency_key = app.current_event.headers.get('idempotency-key')
    return payments_service(get_settings()).checkout(account_id, body, idempotency_key=idempotency_key)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
