"""Ops: add or remove credits by hand, with a reason and an actor (run from the Lambda console).

Test event: tests/events/admin/adjust_credits.json. The business id makes a re-run harmless.
"""

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from atelier.observability import logger
from atelier.wiring import ledger


class AdjustCredits(BaseModel):
    model_config = ConfigDict(extra='forbid')
    account_id: str = Field(min_length=1)
    amount: int = Field(description='Signed: positive adds credit, negative takes it back.')
    business_id: str = Field(min_length=1, description='Unique id of this adjustment, e.g. a ticket number.')
    reason: str = Field(min_length=3)
    actor: str = Field(min_length=1, description='Who made the adjustment.')


@logger.inject_lambda_context
@event_parser(model=AdjustCredits)
def lambda_handler(event: AdjustCredits, context: LambdaContext) -> dict[str, Any]:
    entry = ledger().adjust(
        event.account_id,
        amount=event.amount,
        business_id=f'adjust:{event.business_id}',
        reason=event.reason,
        actor=event.actor,
    )
    account = ledger().get_account(event.account_id)
    logger.info('credits adjusted', account_id=event.account_id, amount=event.amount, actor=event.actor)
    return {
        'entry': entry.model_dump(mode='json'),
        'balance': {'available': account.available, 'held': account.held},
    }
