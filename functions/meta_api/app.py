from typing import Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from atelier.api import create_resolver, resolve
from atelier.api.contract import answers
from atelier.api.http import error_response
from atelier.api.meta import allowed_methods, openapi_document, swagger_html
from atelier.observability import logger

app = create_resolver()


class Health(BaseModel):
    status: str


@app.get(
    '/health',
    tags=['meta'],
    operation_id='getHealth',
    summary='Whether the API answers',
    responses=answers({200: 'It does'}),
)
def handle_health() -> Health:
    return Health(status='ok')


@app.get('/openapi.json', include_in_schema=False)
def handle_openapi() -> dict[str, Any]:
    return openapi_document()


@app.get('/docs', include_in_schema=False)
def handle_docs() -> Response[str]:
    return Response(status_code=200, content_type=content_types.TEXT_HTML, body=swagger_html())


@app.not_found
def handle_unknown_route(_: Exception) -> Response[Any]:
    # Every request no route claims lands here ($default): 405 when the path exists, else 404.
    methods = allowed_methods(app.current_event.path)
    request_id = app.current_event.request_context.request_id
    if methods:
        response = error_response(405, 'method_not_allowed', 'Method not allowed on this route.', request_id)
        response.headers['Allow'] = ', '.join(methods)
        return response
    return error_response(404, 'route_not_found', 'No such route.', request_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
