from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.parser.types import Json
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.observability import logger
from atelier.tasks import StepInput
from atelier.tasks.wiring import task_service


class DispatchRecord(SqsRecordModel):
    body: Json[StepInput]  # type: ignore[assignment]


processor = BatchProcessor(event_type=EventType.SQS, model=DispatchRecord)


def record_handler(record: DispatchRecord) -> None:
    # Named after the task: a second start of the same task is a no-op, so redelivery is harmless.
    started = task_service().dispatch(record.body.task_id, record.body.account_id)
    logger.info('task dispatched', extra={'task_id': record.body.task_id, 'started': started})


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
