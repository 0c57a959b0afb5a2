"""Stripe webhooks: verify the signature on the raw body, store the event, apply it once (docs/payments.md)."""

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.api import create_resolver, resolve
from atelier.api.contract import BODY, answers
from atelier.api.http import raw_body
from atelier.config import get_settings
from atelier.observability import logger
from atelier.payments.inbox import WebhookAck
from atelier.payments.service import payments_service

app = create_resolver()


@app.post(
    '/webhooks/stripe',
    tags=['webhooks'],
    security=[{'stripeSignature': []}],
    operation_id='receiveStripeWebhook',
    summary='Stripe sends its events here (signed with the endpoint secret)',
    responses=answers({200: 'Received: stored, and applied once (a duplicate is acknowledged)'}, BODY, 401, 503),
)
def handle_stripe_webhook(
    event: Annotated[dict[str, Any], Body(description='A Stripe Event object (id, type, data.object, ...).')],
) -> WebhookAck:
    # The signature covers the exact bytes Stripe sent: the raw body is verified, never the parsed ``event``.
    request = app.current_event
    signature = request.headers.get('stripe-signature')
    return payments_service(get_settings()).stripe_webhook(raw_body(request.raw_event), signature)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
