from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from atelier.api import create_resolver, resolve
from atelier.api.contract import BODY, answers
from atelier.api.http import raw_body
from atelier.observability import logger
from atelier.tasks.wiring import task_service

app = create_resolver()


class WebhookAck(BaseModel):
    received: bool
    result: str


@app.post(
    '/webhooks/providers/<provider>',
    tags=['webhooks'],
    operation_id='receiveProviderWebhook',
    summary='An AI provider reports a job here (signed as it signs: Replicate, Cog, fal; RunPod is unsigned: '
    'its report is checked against the job status at RunPod)',
    responses=answers({200: 'Received (a duplicate or a late report is acknowledged)'}, BODY, 401, 404, 503),
)
def handle_provider_webhook(
    provider: Annotated[str, Path(min_length=1, max_length=40, description='The provider id, e.g. replicate.')],
    report: Annotated[dict[str, Any], Body(description="The provider's job (prediction) as it sends it.")],
) -> WebhookAck:
    # The signature covers the exact bytes the provider sent, so the raw body is verified, never a re-encoding.
    event = app.current_event
    result = task_service().handle_webhook(provider, dict(event.headers), raw_body(event.raw_event))
    return WebhookAck(received=True, result=result)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
