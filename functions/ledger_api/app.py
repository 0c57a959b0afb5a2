from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from atelier.api import create_resolver, resolve
from atelier.api.auth import ledger_read
from atelier.api.contract import BEARER_OR_KEY, answers
from atelier.observability import logger
from atelier.wiring import ledger

app = create_resolver()


class EntryOut(BaseModel):
    id: str
    kind: str
    amount: int
    held_delta: int
    lot: str | None
    reference: str | None
    task_id: str | None
    created_at: datetime


class LedgerPage(BaseModel):
    items: list[EntryOut]
    next_cursor: str | None


@app.get(
    '/v1/ledger',
    tags=['credits'],
    security=[{'bearer': []}, {'apiKey': []}],
    operation_id='listLedgerEntries',
    summary="The account's credit entries, newest first: every grant, hold, capture, release and refund",
    responses=answers(
        {200: 'A page of entries; pass next_cursor as cursor for the next page'}, BEARER_OR_KEY, 400, 422
    ),
)
def handle_list_ledger(
    account_id: Annotated[str, Depends(ledger_read)],
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description='next_cursor of the previous page.')] = None,
) -> LedgerPage:
    page = ledger().list_entries(account_id, limit=limit, cursor=cursor)
    return LedgerPage(
        items=[EntryOut.model_validate(entry, from_attributes=True) for entry in page.items],
        next_cursor=page.next_cursor,
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return resolve(app, event, context)
