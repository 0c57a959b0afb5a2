"""Errors of the credit ledger.

Every one is a :class:`atelier.errors.DomainError`, so the API maps it to a status by its ``kind``.
Nothing is written when one of these is raised.
"""

from __future__ import annotations

from typing import Any

from atelier.errors import Conflict, DomainError, ErrorKind, InvalidInput, NotFound


class InvalidAmount(InvalidInput):
    """An amount is not a whole number of credits in the allowed range."""

    code = 'invalid_amount'


class CreditExpired(InvalidInput):
    """A grant whose credit would already be expired when booked (nothing is booked)."""

    code = 'credit_expired'


class InsufficientCredits(DomainError):
    """Not enough spendable credit for the hold, or the account owes credit after a claw-back."""

    kind = ErrorKind.PAYMENT_REQUIRED
    code = 'insufficient_credits'


class ConcurrencyLimitExceeded(DomainError):
    """The account already has as many open holds (running tasks) as its plan allows."""

    kind = ErrorKind.RATE_LIMITED
    code = 'concurrency_limit'


class AccountNotFound(NotFound):
    code = 'account_not_found'


class HoldNotFound(NotFound):
    code = 'hold_not_found'


class HoldClosed(Conflict):
    """The hold was already settled the other way (released when capturing, or captured when releasing)."""

    code = 'hold_closed'


class CaptureExceedsHold(InvalidInput):
    """A capture asked for more than the hold reserved: a task never costs more than its hold."""

    code = 'capture_exceeds_hold'


class IdempotencyConflict(Conflict):
    """The business id was already applied with different parameters."""

    code = 'idempotency_conflict'


class InvalidCursor(DomainError):
    """A listing cursor that this ledger did not issue for this account (or that was altered)."""

    kind = ErrorKind.BAD_REQUEST
    code = 'invalid_cursor'


class TooManyLots(Conflict):
    """An operation would touch more credit lots than fit in one DynamoDB transaction."""

    code = 'too_many_lots'


class ExtraItemConditionFailed(Conflict):
    """The condition of one of the caller's ``extra_items`` failed, so nothing was written.

    ``index`` is the position within ``extra_items``; ``item`` is the existing item when the caller asked
    for it with ``ReturnValuesOnConditionCheckFailure='ALL_OLD'`` (low-level DynamoDB format), else None.
    """

    code = 'extra_item_condition_failed'

    def __init__(self, index: int, item: dict[str, Any] | None = None) -> None:
        super().__init__(f'condition of extra item {index} failed', details={'index': index})
        self.index = index
        self.item = item


class LedgerUnavailable(DomainError):
    """The store kept failing or stayed contended past the retry budget; nothing or exactly one effect
    was applied, and retrying the same call is safe."""

    kind = ErrorKind.UNAVAILABLE
    code = 'ledger_unavailable'
