from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends, Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.api import create_resolver, resolve
from atelier.api.auth import tasks_read, tasks_write
from atelier.api.contract import BEARER_OR_KEY, BODY, answers
from atelier.observability import logger
from atelier.tasks import CreateTaskRequest, TaskPage, TaskStatus, TaskView
from atelier.tasks.wiring import task_service

app = create_resolver()
Writer = Annotated[str, Depends(tasks_write)]  # bearer, or an API key with tasks:write
Reader = Annotated[str, Depends(tasks_read)]  # bearer, or an API key with tasks:read
TaskId = Annotated[str, Path(min_length=1, max_length=128, description='The id of a task (`tsk_...`).')]
#: What to follow from a task: the task itself, and its cancel (links for generated clients and fuzzers).
TASK_LINKS = {
    'getTask': {'operationId': 'getTask', 'parameters': {'task_id': '$response.body#/id'}},
    'cancelTask': {'operationId': 'cancelTask', 'parameters': {'task_id': '$response.body#/id'}},
}
KEYS = Annotated[
    str,
    Header(
        alias='idempotency-key',
        min_length=1,
        max_length=255,
        description='A key of your choice per task (e.g. a UUID): a retry with the same key and body answers the '
        'same task (200) instead of creating another; the same key with another body is 409.',
    ),
]


@app.post(
    '/v1/tasks',
    tags=['tasks'],
    security=[{'bearer': []}, {'apiKey': []}],
    operation_id='createTask',
    summary='Start a task',
    description='Holds the most the task can cost, then runs it; the answer is the queued task. Poll getTask.',
    responses=answers(
        {202: 'Created: the task is queued', 200: 'A retry of an Idempotency-Key: the task it created'},
        BODY,
        BEARER_OR_KEY,
        402,
        404,
        409,
        429,
        links=TASK_LINKS,
    ),
)
def handle_create_task(account_id: Writer, body: CreateTaskRequest, idempotency_key: KEYS) -> Response[TaskView]:
    created = task_service().create(account_id, idempotency_key, body)
    return Response(
        status_code=202 if created.new else 200,
        content_type=content_types.APPLICATION_JSON,
        body=created.task.model_dump(mode='json'),
    )


@app.get(
    '/v1/tasks',
    tags=['tasks'],
    security=[{'bearer': []}, {'apiKey': []}],
    operation_id='listTasks',
    summary="List the account's tasks, newest first",
    responses=answers({200: 'A page of tasks; pass next_cursor as cursor for the next page'}, BEARER_OR_KEY, 400, 422),
)
def handle_list_tasks(
    account_id: Reader,
    status: Annotated[TaskStatus | None, Query(description='Only tasks in this status.')] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=1000, description='next_cursor of the previous page.')] = None,
) -> TaskPage:
    return task_service().list(account_id, limit=limit, status=status, cursor=cursor)


@app.get(
    '/v1/tasks/<task_id>',
    tags=['tasks'],
    security=[{'bearer': []}, {'apiKey': []}],
    operation_id='getTask',
    summary='Get a task: its status, cost and outputs',
    responses=answers({200: 'The task'}, BEARER_OR_KEY, 404, 422),
)
def handle_get_task(account_id: Reader, task_id: TaskId) -> TaskView:
    return task_service().get(account_id, task_id)


@app.post(
    '/v1/tasks/<task_id>/cancel',
    tags=['tasks'],
    security=[{'bearer': []}, {'apiKey': []}],
    operation_id='cancelTask',
    summary='Ask to cancel a task',
    description='Accepted (202): the task ends canceled and refunded unless it finishes first. Poll getTask.',
    responses=answers({202: 'Cancel accepted: the task as it is now'}, BEARER_OR_KEY, 404, 409, 422),
)
def handle_cancel_task(account_id: Writer, task_id: TaskId) -> Response[TaskView]:
    task = task_service().cancel(account_id, task_id)
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=task.model_dump(mode='json'))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
