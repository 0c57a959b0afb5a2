"""Scheduled: book out the unused credit of expired lots (subscription periods, promotions)."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.ledger import utc_now
from atelier.observability import logger, metrics
from atelier.wiring import ledger


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    entries = ledger().expire(utc_now())
    expired = -sum(entry.amount for entry in entries)
    metrics.add_metric(name='CreditsExpired', unit='Count', value=expired)
    logger.info('expired credit booked out', lots=len(entries), credits=expired)
    return {'lots': len(entries), 'credits': expired}
