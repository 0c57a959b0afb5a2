"""Ops: apply stored payment events again (run from the Lambda console).

Test events: tests/events/payments/replay_one_event.json (one event by provider and id) and
tests/events/payments/replay_failed_events.json (the oldest failed ones). Applying is idempotent by
business ids, so a replay never grants twice.
"""

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.config import get_settings
from atelier.observability import logger
from atelier.payments.models import ReplayRequest
from atelier.payments.service import payments_service


@logger.inject_lambda_context
@event_parser(model=ReplayRequest)
def lambda_handler(event: ReplayRequest, context: LambdaContext) -> dict[str, Any]:
    acks = payments_service(get_settings()).replay(event)
    logger.info('payment events replayed', count=len(acks))
    return {'replayed': [ack.model_dump() for ack in acks]}
