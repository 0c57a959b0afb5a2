"""The task domain's ports: the ledger (another module's service), the dispatch queue and the workflow engine.

Real adapters are in :mod:`atelier.tasks.adapters`; unit tests pass fakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class AccountView(Protocol):
    @property
    def plan(self) -> str: ...


class SettlementView(Protocol):
    @property
    def captured(self) -> int: ...

    @property
    def released(self) -> int: ...


class LedgerPort(Protocol):
    """The part of :class:`atelier.ledger.Ledger` that tasks use (holds are business id ``task:{id}:hold``)."""

    def get_account(self, account_id: str) -> AccountView: ...

    def hold(
        self,
        account_id: str,
        *,
        task_id: str,
        amount: int,
        max_open_holds: int | None = None,
        extra_items: Sequence[Mapping[str, Any]] = (),
    ) -> Any: ...

    def capture(self, account_id: str, *, task_id: str, amount: int) -> SettlementView: ...

    def release(self, account_id: str, *, task_id: str) -> SettlementView: ...


class DispatchQueue(Protocol):
    def send(self, task_id: str, account_id: str) -> None:
        """Hand a created task to the dispatcher."""
        ...


class Workflow(Protocol):
    def start(self, task_id: str, account_id: str) -> bool:
        """Start the task's lifecycle execution (named after the task); False if it was started before."""
        ...

    def resume(self, token: str) -> bool:
        """Wake the wait holding ``token`` (``SendTaskSuccess``); False if that wait is already over."""
        ...
