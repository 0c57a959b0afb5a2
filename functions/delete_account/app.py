"""Account deletion's purge: from the AccountDeletionQueue (DELETE /v1/me queues it), or run by ops.

Ops test event (tests/events/admin/delete_account.json): ``{"account_id": "acct_..."}`` deletes the account as
DELETE /v1/me would (a deletion asked for through support), or finishes one that is stuck; running it again
is harmless.
"""

from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.parser.types import Json
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from atelier.observability import logger
from atelier.wiring import account_purge


class PurgeRequest(BaseModel):
    model_config = ConfigDict(extra='forbid')
    account_id: str = Field(min_length=1, max_length=128)
    recheck: bool = Field(default=False, description='The second run, after in-flight task steps are over.')


class PurgeRecord(SqsRecordModel):
    body: Json[PurgeRequest]  # type: ignore[assignment]


processor = BatchProcessor(event_type=EventType.SQS, model=PurgeRecord)


def record_handler(record: PurgeRecord) -> None:
    account_purge().run(record.body.account_id, recheck=record.body.recheck)


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if 'Records' in event:
        return process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
    request = PurgeRequest.model_validate(event)
    return account_purge().run(request.account_id, recheck=request.recheck).as_dict()
