from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.api import create_resolver, resolve
from atelier.api.auth import tasks_read, tasks_write
from atelier.observability import logger
from atelier.tasks import CreateTaskRequest, TaskPage, TaskStatus, TaskView
from atelier.tasks.wiring import task_service

app = create_resolver()
Writer = Annotated[str, Depends(tasks_write)]  # bearer, or an API key with tasks:write
Reader = Annotated[str, Depends(tasks_read)]  # bearer, or an API key with tasks:read
TaskId = Annotated[str, Path(min_length=1, max_length=128)]


@app.post('/v1/tasks', tags=['tasks'], security=[{'bearer': []}, {'apiKey': []}])
def handle_create_task(
    account_id: Writer,
    body: CreateTaskRequest,
    idempotency_key: Annotated[str | None, Header(alias='idempotency-key', max_length=1000)] = None,
) -> Response[TaskView]:
    created = task_service().create(account_id, idempotency_key, body)
    return Response(
        status_code=202 if created.new else 200,
        content_type=content_types.APPLICATION_JSON,
        body=created.task.model_dump(mode='json'),
    )


@app.get('/v1/tasks', tags=['tasks'], security=[{'bearer': []}, {'apiKey': []}])
def handle_list_tasks(
    account_id: Reader,
    status: Annotated[TaskStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> TaskPage:
    return task_service().list(account_id, limit=limit, status=status, cursor=cursor)


@app.get('/v1/tasks/<task_id>', tags=['tasks'], security=[{'bearer': []}, {'apiKey': []}])
def handle_get_task(account_id: Reader, task_id: TaskId) -> TaskView:
    return task_service().get(account_id, task_id)


@app.post('/v1/tasks/<task_id>/cancel', tags=['tasks'], security=[{'bearer': []}, {'apiKey': []}])
def handle_cancel_task(account_id: Writer, task_id: TaskId) -> Response[TaskView]:
    task = task_service().cancel(account_id, task_id)
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=task.model_dump(mode='json'))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
