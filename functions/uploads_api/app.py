from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.api import create_resolver, resolve
from atelier.api.auth import uploads_write
from atelier.api.contract import BEARER_OR_KEY, BODY, answers
from atelier.observability import logger
from atelier.storage.uploads import Upload, UploadRequest, create_upload
from atelier.tasks.wiring import media

app = create_resolver()


@app.post(
    '/v1/uploads',
    tags=['uploads'],
    security=[{'bearer': []}, {'apiKey': []}],
    operation_id='createUpload',
    summary='Upload a file for a task input',
    description='Answers a presigned POST (form fields, then the file) and the key to put in a task input.',
    responses=answers({200: 'Where to POST the file, and its key'}, BODY, BEARER_OR_KEY),
)
def handle_create_upload(account_id: Annotated[str, Depends(uploads_write)], body: UploadRequest) -> Upload:
    return create_upload(account_id, body, media())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
