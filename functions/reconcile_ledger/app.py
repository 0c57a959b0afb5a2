"""Scheduled (daily) and ops: check that every stored balance equals the sum of its ledger entries.

Test event: tests/events/admin/reconcile_ledger.json (one account); ``{}`` checks every account.
A mismatch is logged with both sides and counted in the ``LedgerMismatches`` metric, which alarms; each
account is compared from a consistent read (``Ledger.reconcile``), so a write racing the job is no mismatch.
An account that kept changing for the whole check is checked again once every other account is done (a
quieter moment); if it is still changing, it is logged, counted in ``LedgerBusyAccounts`` and listed under
``busy`` (a key present only then).
"""

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict

from atelier.ledger import LedgerUnavailable
from atelier.observability import logger, metrics
from atelier.wiring import ledger


class ReconcileLedger(BaseModel):
    model_config = ConfigDict(extra='ignore')  # scheduled events carry EventBridge fields
    account_ids: list[str] | None = None


@logger.inject_lambda_context
@metrics.log_metrics
@event_parser(model=ReconcileLedger)
def lambda_handler(event: ReconcileLedger, context: LambdaContext) -> dict[str, Any]:
    checked, mismatched, later, busy = 0, [], [], []
    accounts = list(event.account_ids or ledger().account_ids())
    for attempt, queue in enumerate((accounts, later)):
        for account_id in list(queue):
            try:
                result = ledger().reconcile(account_id)
            except LedgerUnavailable:
                (later if attempt == 0 else busy).append(account_id)
                if attempt:
                    logger.warning('ledger busy: account not checked', account_id=account_id)
                continue
            checked += 1
            if not result.ok:
                mismatched.append(account_id)
                logger.error('ledger mismatch', account_id=account_id, reconciliation=result.model_dump(mode='json'))
    metrics.add_metric(name='LedgerMismatches', unit='Count', value=len(mismatched))
    metrics.add_metric(name='LedgerBusyAccounts', unit='Count', value=len(busy))
    return {'checked': checked, 'mismatched': mismatched, **({'busy': busy} if busy else {})}
