"""What payments need from the rest of Atelier: the credit ledger and a way to set an account's plan."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol


class CreditLedger(Protocol):
    """The part of :class:`atelier.ledger.Ledger` that payments use (every call idempotent by business id)."""

    def get_account(self, account_id: str) -> Any:
        """The account; raises ``AccountNotFound`` when there is none."""
        ...

    def grant(
        self,
        account_id: str,
        *,
        amount: int,
        kind: Any,
        business_id: str,
        expires_at: datetime | None = None,
        memo: str | None = None,
    ) -> Any: ...

    def claw_back(
        self, account_id: str, *, amount: int, business_id: str, reason: str, source: str | None = None
    ) -> Any: ...


class PlanWriter(Protocol):
    """Sets the plan stored on an account (the plan decides the concurrency limit)."""

    def set_plan(self, account_id: str, plan: str) -> None: ...


class LedgerAccountPlans:
    """Writes ``plan`` on the ledger's account item.

    Stopgap until the ledger offers ``set_plan``: the ledger has no operation that changes a plan, and its
    account writes update only the balance attributes, so setting ``plan`` with one conditional
    ``UpdateItem`` neither races nor undoes a balance change. When ``ledger.set_plan`` exists it is used.
    """

    def __init__(self, ledger: Any, table_name: str, client: Any) -> None:
        self._ledger = ledger
        self._table = table_name
        self._client = client

    def set_plan(self, account_id: str, plan: str) -> None:
        ledger_set_plan = getattr(self._ledger, 'set_plan', None)
        if callable(ledger_set_plan):
            ledger_set_plan(account_id, plan)
            return
        from atelier.ledger.dynamodb import account_key

        self._client.update_item(
            TableName=self._table,
            Key=account_key(account_id),
            UpdateExpression='SET #plan = :plan',
            ConditionExpression='attribute_exists(pk)',
            ExpressionAttributeNames={'#plan': 'plan'},
            ExpressionAttributeValues={':plan': {'S': plan}},
        )
