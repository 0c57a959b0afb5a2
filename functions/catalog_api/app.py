from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.api import create_resolver, resolve
from atelier.api.auth import models_read
from atelier.api.contract import BEARER_OR_KEY, BODY, answers
from atelier.catalog.models import ModelList, ModelView
from atelier.observability import logger
from atelier.tasks import Estimate, EstimateRequest
from atelier.tasks.wiring import task_service

app = create_resolver()
Account = Annotated[str, Depends(models_read)]  # bearer, or an API key with models:read


@app.get(
    '/v1/models',
    tags=['catalog'],
    security=[{'bearer': []}, {'apiKey': []}],
    operation_id='listModels',
    summary='List the models: what each takes (JSON Schema) and how it is priced',
    responses=answers({200: 'Every model this deployment runs'}, BEARER_OR_KEY),
)
def handle_list_models(account_id: Account) -> ModelList:
    return ModelList(items=[ModelView.of(model) for model in task_service().catalog])


@app.post(
    '/v1/estimates',
    tags=['catalog'],
    security=[{'bearer': []}, {'apiKey': []}],
    operation_id='estimateTask',
    summary='What a task would hold (its most) in credits; nothing is held or created',
    responses=answers({200: 'The credits a createTask with this body would hold'}, BODY, BEARER_OR_KEY, 404),
)
def handle_estimate(account_id: Account, body: EstimateRequest) -> Estimate:
    return task_service().estimate(body.model, body.input)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
