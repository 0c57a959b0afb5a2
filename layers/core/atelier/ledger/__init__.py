"""The credit ledger: accounts, credit lots, holds and an append-only ledger of entries on DynamoDB.

TigerBeetle's semantics on DynamoDB transactions: integer credits; every change is one entry keyed by its
business id and written in the same transaction as the balance change, so each business event takes effect
exactly once; holds are captured (at most the held amount) or released exactly once; available credit never
goes negative from spending, only from a claw-back. See docs/ledger.md.
"""

from typing import TYPE_CHECKING, Any

from atelier.ledger.errors import (
    AccountNotFound,
    CaptureExceedsHold,
    ConcurrencyLimitExceeded,
    CreditExpired,
    ExtraItemConditionFailed,
    HoldClosed,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidAmount,
    InvalidCursor,
    LedgerUnavailable,
    TooManyLots,
)
from atelier.ledger.models import (
    MAX_AMOUNT,
    Account,
    Entry,
    EntryKind,
    EntryPage,
    GrantSpec,
    Hold,
    HoldStatus,
    Leg,
    LegEffect,
    LotKind,
    LotState,
    Reconciliation,
    Settlement,
)
from atelier.ledger.ports import LedgerStore
from atelier.ledger.service import Clock, Ledger, utc_now

if TYPE_CHECKING:
    from atelier.ledger.dynamodb import DynamoDBLedgerStore


def __getattr__(name: str) -> Any:
    # The DynamoDB adapter (and botocore) loads only when asked for: importing the models stays cheap.
    if name == 'DynamoDBLedgerStore':
        from atelier.ledger.dynamodb import DynamoDBLedgerStore

        return DynamoDBLedgerStore
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = [
    'MAX_AMOUNT',
    'Account',
    'AccountNotFound',
    'CaptureExceedsHold',
    'Clock',
    'ConcurrencyLimitExceeded',
    'CreditExpired',
    'DynamoDBLedgerStore',
    'Entry',
    'EntryKind',
    'EntryPage',
    'ExtraItemConditionFailed',
    'GrantSpec',
    'Hold',
    'HoldClosed',
    'HoldNotFound',
    'HoldStatus',
    'IdempotencyConflict',
    'InsufficientCredits',
    'InvalidAmount',
    'InvalidCursor',
    'Ledger',
    'LedgerStore',
    'LedgerUnavailable',
    'Leg',
    'LegEffect',
    'LotKind',
    'LotState',
    'Reconciliation',
    'Settlement',
    'TooManyLots',
    'utc_now',
]
