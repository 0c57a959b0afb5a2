from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.api import create_resolver, resolve
from atelier.api.auth import uploads_write
from atelier.observability import logger
from atelier.storage.uploads import Upload, UploadRequest, create_upload
from atelier.tasks.wiring import media

app = create_resolver()


@app.post('/v1/uploads', tags=['uploads'], security=[{'bearer': []}, {'apiKey': []}])
def handle_create_upload(account_id: Annotated[str, Depends(uploads_write)], body: UploadRequest) -> Upload:
    return create_upload(account_id, body, media())


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
