"""RevenueCat webhooks: check the Authorization value (fail closed), store the event, apply it once."""

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
    '/webhooks/revenuecat',
    tags=['webhooks'],
    security=[{'revenueCatAuthorization': []}],
    operation_id='receiveRevenueCatWebhook',
    summary='RevenueCat sends its events here (with the Authorization value set in its dashboard)',
    responses=answers({200: 'Received: stored, and applied once (a duplicate is acknowledged)'}, BODY, 401, 503),
)
def handle_revenuecat_webhook(
    envelope: Annotated[
        dict[str, Any], Body(description='{"api_version": "1.0", "event": {...}}, as RevenueCat sends.')
    ],
) -> WebhookAck:
    request = app.current_event
    authorization = request.headers.get('authorization')
    return payments_service(get_settings()).revenuecat_webhook(raw_body(request.raw_event), authorization)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
