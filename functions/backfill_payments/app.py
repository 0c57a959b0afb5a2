"""Ops and daily: apply what Stripe and RevenueCat know that no webhook brought (docs/payments.md, Backfill).

Input: ``{"stripe": {"since": <unix ts>, "undelivered_only": true}}`` (the Events API, last 30 days) and/or
``{"revenuecat": {"app_user_ids": [...]}}`` (``GET /v1/subscribers``). The daily schedule runs the Stripe part.
Output: per provider, how many events were processed, duplicate, ignored, parked, rejected or failed.
Test events: tests/events/payments/backfill_*.json. Running it again is always safe (business ids).
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from atelier.config import get_settings
from atelier.observability import logger
from atelier.payments.models import BackfillRequest
from atelier.payments.service import payments_service


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = BackfillRequest.from_event(event)
    result = payments_service(get_settings()).backfill(request).model_dump()
    logger.info('payments backfilled', extra={'result': result})
    return result
