"""The inbox of verified provider events: store raw first, then apply, then record how it went.

- An event is stored (``EVENT#{provider}#{id}``) before anything is applied, so ops can always see it and,
  while its raw body is kept (``RawEventRetentionDays``), replay it. Its record (ids, status, outcome, amount;
  no personal data) is kept forever: it is what recognises a redelivery, long after the raw body is gone.
- A redelivery of an event that was settled (processed, ignored, parked, rejected) changes nothing and is
  answered 200. A redelivery of an event that failed or never finished is applied again: there is no
  "in progress" marker to get stuck on, because applying is idempotent by business ids.
- A failure while applying marks the event ``failed`` (never done) and answers 503, so the provider
  retries; ``ReplayPaymentEventFunction`` applies stored events again on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel

from atelier.observability import logger
from atelier.payments.errors import ModeMismatch, PaymentsUnavailable
from atelier.payments.store import EventSummary, PaymentsTable, StoredEvent


@dataclass(frozen=True)
class Outcome:
    """How applying one event went. ``parked``: authentic but not attributable (unknown account or product)."""

    status: Literal['processed', 'ignored', 'parked']
    detail: str
    account_id: str | None = None


Applier = Callable[[dict[str, Any]], Outcome]
#: (provider, verified event) -> what its permanent record keeps (:func:`atelier.payments.summary.summarize_event`).
Summarizer = Callable[[str, dict[str, Any]], EventSummary]


def _no_summary(provider: str, event: dict[str, Any]) -> EventSummary:
    return EventSummary()


class WebhookAck(BaseModel):
    """What a provider gets back for an authentic event."""

    received: bool = True
    event_id: str
    status: Literal['processed', 'ignored', 'parked', 'duplicate']
    detail: str = ''


class PaymentInbox:
    def __init__(self, table: PaymentsTable, summarize: Summarizer = _no_summary) -> None:
        self._table = table
        self._summarize = summarize

    def accept(
        self, provider: str, event_id: str, event_type: str, body: bytes, event: dict[str, Any], apply: Applier
    ) -> WebhookAck:
        """Store the verified ``event`` (raw ``body``) once, and apply it unless that was already settled."""
        try:
            stored, new = self._table.record_event(provider, event_id, event_type, body, self._summary(provider, event))
        except ClientError as exc:  # throttled, or still contended after the store's retries: the provider retries
            logger.warning('payment event not stored', extra={'provider': provider, 'event_id': event_id})
            raise PaymentsUnavailable('The event could not be stored now; retry it.') from exc
        if not new and stored.settled:
            logger.info('duplicate payment event', extra={'provider': provider, 'event_id': event_id})
            return WebhookAck(event_id=event_id, status='duplicate', detail=f'already {stored.status}')
        return self._apply(stored, event, apply)

    def _summary(self, provider: str, event: dict[str, Any]) -> EventSummary:
        try:
            return self._summarize(provider, event)
        except Exception:  # storing the event matters more than describing it
            logger.exception('payment event not summarized', extra={'provider': provider, 'alert': 'payments'})
            return EventSummary()

    def replay(self, stored: StoredEvent, event: dict[str, Any], apply: Applier) -> WebhookAck:
        """Apply a stored event again, whatever its status (applying is idempotent)."""
        return self._apply(stored, event, apply)

    def _apply(self, stored: StoredEvent, event: dict[str, Any], apply: Applier) -> WebhookAck:
        where = {'provider': stored.provider, 'event_id': stored.event_id, 'event_type': stored.event_type}
        try:
            outcome = apply(event)
        except ModeMismatch as exc:
            self._table.mark_event(stored.provider, stored.event_id, 'rejected', outcome=exc.message)
            logger.warning('payment event from the wrong mode rejected', extra={**where, 'alert': 'payments'})
            raise
        except Exception as exc:
            logger.exception('payment event failed; left for a retry', extra={**where, 'alert': 'payments'})
            try:
                self._table.mark_event(stored.provider, stored.event_id, 'failed', error=f'{type(exc).__name__}: {exc}')
            except Exception:
                logger.exception('could not mark the payment event failed', extra=where)
            raise PaymentsUnavailable('The event could not be applied now; it is kept and will be retried.') from exc
        try:
            self._table.mark_event(
                stored.provider, stored.event_id, outcome.status, outcome=outcome.detail, account_id=outcome.account_id
            )
        except Exception as exc:
            # Applied but not marked: the event stays open, and the retry re-applies it (a no-op by business ids).
            logger.exception('could not mark the payment event settled', extra=where)
            raise PaymentsUnavailable('The event was applied but not recorded; a retry settles it.') from exc
        log = logger.warning if outcome.status == 'parked' else logger.info
        extra = {**where, 'status': outcome.status, 'detail': outcome.detail, 'account_id': outcome.account_id}
        if outcome.status == 'parked':
            extra['alert'] = 'payments'
        log('payment event applied', extra=extra)
        return WebhookAck(event_id=stored.event_id, status=outcome.status, detail=outcome.detail)
