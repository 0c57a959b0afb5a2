"""Backfill: what the providers know that no webhook brought, applied exactly as if the webhook had arrived.

- **Stripe**: the Events API (``GET /v1/events``, the last 30 days; by default only ``delivery_success=false``,
  i.e. events whose deliveries are pending or failed) returns the very events the webhook would have carried.
  Each goes through the webhook's inbox: stored raw (``EVENT#stripe#{id}``) unless already there, then applied
  by business ids. An event the webhook already settled is a ``duplicate`` and changes nothing.
- **RevenueCat**: no event log exists, so ``GET /v1/subscribers/{app_user_id}`` (the canonical state RevenueCat
  recommends syncing from) is turned into the webhook events it implies: a purchase per non-subscription
  purchase and per subscription's latest transaction (business id ``rc:txn:{store_transaction_id}``, as the
  webhook's), a ``CUSTOMER_SUPPORT`` cancellation per refund, an expiration per lapsed subscription. They get
  deterministic event ids (``rcsync:{purchase|expiration}:{transaction}``, ``rcsync:refund:{transaction}:
  {refunded_at ms}``: a refund after a reversal is another event), are stored raw and applied by the same
  rules as webhooks (a refund's effect is the store's newest refund report, whichever event brought it), so
  anything missed is granted once and nothing is doubled.

What RevenueCat's v1 subscriber object cannot tell: earlier periods of a subscription (only the latest
transaction is listed), and the subscription's original transaction (the key of its plan state): the key of
a known subscription of the same product is reused, else the report is *provisional* and the first store
webhook of that product adopts it (:meth:`AccountPlanState.with_key_adopted`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from atelier.errors import DomainError
from atelier.observability import logger
from atelier.payments.book import PaymentBook
from atelier.payments.errors import ModeMismatch
from atelier.payments.inbox import Applier, PaymentInbox
from atelier.payments.models import (
    BackfillTally,
    RevenueCatBackfill,
    RevenueCatBackfillResult,
    StripeBackfill,
    StripeBackfillResult,
)
from atelier.payments.revenuecat_events import ANONYMOUS_PREFIX, BACKFILL_FIELD

#: Prefix of the ids of events derived from RevenueCat subscribers (real RevenueCat event ids are UUIDs).
SYNC_PREFIX = 'rcsync'

#: product id -> (the original transaction its subscription is keyed by, whether that key is provisional).
KnownSubscription = Callable[[str], tuple[str, bool] | None]


class EventPageLike(Protocol):
    @property
    def events(self) -> list[dict[str, Any]]: ...

    @property
    def has_more(self) -> bool: ...


class StripeEventSource(Protocol):
    """``GET /v1/events`` (:class:`atelier.payments.stripe_gateway.StripeEventLog`)."""

    def page(
        self,
        *,
        types: Sequence[str],
        since: int | None = None,
        undelivered_only: bool = True,
        starting_after: str | None = None,
        limit: int = 100,
    ) -> EventPageLike: ...


class SubscriberSource(Protocol):
    """``GET /v1/subscribers/{app_user_id}`` (:class:`atelier.payments.revenuecat_api.RevenueCatApi`)."""

    def subscriber(self, app_user_id: str) -> dict[str, Any]: ...


class PaymentsBackfill:
    def __init__(
        self,
        inbox: PaymentInbox,
        book: PaymentBook,
        *,
        stripe_apply: Applier,
        stripe_types: Sequence[str],
        revenuecat_apply: Applier,
    ) -> None:
        self._inbox = inbox
        self._book = book
        self._stripe_apply = stripe_apply
        self._stripe_types = tuple(stripe_types)
        self._revenuecat_apply = revenuecat_apply

    # ---------------------------------------------------------------- Stripe
    def stripe(self, request: StripeBackfill, source: StripeEventSource) -> StripeBackfillResult:
        """List up to ``max_events`` events (Stripe lists newest first), then apply them oldest first.

        The rules give the same balances in any order; oldest first also gives the entries the ids that
        webhooks arriving in order would have given. When more events remain (older ones), the result says
        ``more`` and ``resume_after`` (the oldest event listed): run again with ``starting_after`` set to it.
        """
        result = StripeBackfillResult()
        listed: list[dict[str, Any]] = []
        cursor = request.starting_after
        while True:
            try:
                page = source.page(
                    types=self._stripe_types,
                    since=request.since,
                    undelivered_only=request.undelivered_only,
                    starting_after=cursor,
                    limit=min(100, request.max_events - len(listed)),
                )
            except DomainError as exc:
                logger.warning('stripe backfill stopped', extra={'reason': exc.message, 'alert': 'payments'})
                result.problem(f'Events API: {exc.message}')
                result.more = True
                break
            for event in page.events:
                if isinstance(event.get('id'), str):
                    listed.append(event)
                    cursor = event['id']
            if not page.has_more or not page.events:
                break
            if len(listed) >= request.max_events:
                result.more = True
                break
        result.resume_after = cursor if result.more else None
        chronological = listed[::-1]  # Stripe lists newest first; events of the same second keep its order
        chronological.sort(key=lambda e: e['created'] if isinstance(e.get('created'), int) else 0)
        for event in chronological:
            event_type = event.get('type')
            if isinstance(event_type, str):
                body = json.dumps(event, separators=(',', ':')).encode()
                self._accept(result, 'stripe', event['id'], event_type, body, event, self._stripe_apply)
        return result

    # ---------------------------------------------------------------- RevenueCat
    def revenuecat(self, request: RevenueCatBackfill, source: SubscriberSource) -> RevenueCatBackfillResult:
        """Reconcile each app user's purchases and subscriptions with the ledger."""
        result = RevenueCatBackfillResult()
        for app_user_id in dict.fromkeys(request.app_user_ids):
            try:
                response = source.subscriber(app_user_id)
            except DomainError as exc:
                logger.warning(
                    'revenuecat subscriber not fetched',
                    extra={'app_user_id': app_user_id, 'reason': exc.message, 'alert': 'payments'},
                )
                result.subscribers_failed += 1
                result.problem(f'{app_user_id}: {exc.message}')
                continue
            result.subscribers += 1
            derived = subscriber_events(
                app_user_id,
                response,
                known_subscription=self._known_subscriptions(app_user_id, response),
                now_ms=int(self._book.now().timestamp() * 1000),
            )
            result.unmatched += len(derived.unmatched)
            for text in derived.unmatched:
                result.problem(f'{app_user_id}: {text}')
            for envelope in derived.events:
                event = envelope['event']
                body = json.dumps(envelope, separators=(',', ':')).encode()
                self._accept(result, 'revenuecat', event['id'], event['type'], body, envelope, self._revenuecat_apply)
        return result

    def _known_subscriptions(self, app_user_id: str, response: dict[str, Any]) -> KnownSubscription:
        """Finds the key (original transaction, provisional or not) of the account's subscription of a product."""
        subscriber = _dict(response.get('subscriber'))
        candidates = [app_user_id, subscriber.get('original_app_user_id')]
        account = next(
            (
                c
                for c in candidates
                if isinstance(c, str) and not c.startswith(ANONYMOUS_PREFIX) and self._book.account_exists(c)
            ),
            None,
        )
        if account is None:
            return lambda product_id: None
        subscriptions = self._book.plan_state(account).subscriptions
        catalog = self._book.catalog

        def known(product_id: str) -> tuple[str, bool] | None:
            product = catalog.store_product(product_id)
            if product is None:
                return None
            matches = [
                (key, s)
                for key, s in subscriptions.items()
                if s.provider == 'revenuecat'
                and key.startswith('rc:')
                and (s.product == product.id or (s.product is None and s.plan == product.plan))
            ]
            best = max(matches, key=lambda pair: (pair[1].entitled, pair[1].event_at), default=None)
            return (best[0].removeprefix('rc:'), best[1].provisional) if best is not None else None

        return known

    # ---------------------------------------------------------------- the webhook's path
    def _accept(
        self,
        tally: BackfillTally,
        provider: str,
        event_id: str,
        event_type: str,
        body: bytes,
        event: dict[str, Any],
        apply: Applier,
    ) -> None:
        try:
            ack = self._inbox.accept(provider, event_id, event_type, body, event, apply)
        except ModeMismatch as exc:
            tally.count('rejected')
            tally.problem(f'{provider} {event_id}: {exc.message}')
        except DomainError as exc:  # stored as failed: a later backfill, a redelivery or a replay applies it
            tally.count('failed')
            tally.problem(f'{provider} {event_id}: {exc.message}')
        else:
            tally.count(ack.status)


# ---------------------------------------------------------------- RevenueCat subscriber -> webhook events


@dataclass
class DerivedEvents:
    events: list[dict[str, Any]] = field(default_factory=list)  # webhook bodies ({"api_version", "event"})
    unmatched: list[str] = field(default_factory=list)  # purchases that cannot be matched to a webhook's ids


def subscriber_events(
    app_user_id: str,
    response: dict[str, Any],
    *,
    known_subscription: KnownSubscription = lambda product_id: None,
    now_ms: int,
) -> DerivedEvents:
    """The webhook events a ``GET /v1/subscribers`` response implies (pure; ids and keys deterministic).

    Purchases are keyed by ``store_transaction_id``, the id RevenueCat's webhooks report as
    ``transaction_id``; a purchase without it is *unmatched* (RevenueCat's own ``id`` would not match a
    webhook's business id, and could grant twice), reported and skipped.
    """
    subscriber = _dict(response.get('subscriber'))
    original = subscriber.get('original_app_user_id')
    identity = {
        'app_user_id': app_user_id,
        'original_app_user_id': original if isinstance(original, str) and original else app_user_id,
        'aliases': list(dict.fromkeys([app_user_id, *([original] if isinstance(original, str) and original else [])])),
    }
    source = {'source': 'GET /v1/subscribers', 'request_date_ms': response.get('request_date_ms')}
    derived = DerivedEvents()

    for product_id, purchases in sorted(_dict(subscriber.get('non_subscriptions')).items()):
        for purchase in purchases if isinstance(purchases, list) else []:
            if not isinstance(purchase, dict):
                continue
            txn = _str(purchase.get('store_transaction_id'))
            if txn is None:
                derived.unmatched.append(f'{product_id} purchase {purchase.get("id")!r} has no store_transaction_id')
                continue
            marker = {**source, 'provisional_subscription': False, 'entry': purchase}
            common = {
                **identity,
                **_store_fields(purchase),
                'product_id': product_id,
                'transaction_id': txn,
                'original_transaction_id': txn,
                'period_type': 'NORMAL',
                'purchased_at_ms': _ms(purchase.get('purchase_date')),
                'expiration_at_ms': None,
                BACKFILL_FIELD: marker,
            }
            purchased = _ms(purchase.get('purchase_date')) or 0
            derived.events.append(_envelope('purchase', txn, 'NON_RENEWING_PURCHASE', purchased, common))
            refunded = _ms(purchase.get('refunded_at'))
            if refunded is not None:
                derived.events.append(_envelope('refund', txn, 'CANCELLATION', refunded, _refund(common)))

    for product_id, subscription in sorted(_dict(subscriber.get('subscriptions')).items()):
        if not isinstance(subscription, dict):
            continue
        txn = _str(subscription.get('store_transaction_id'))
        if txn is None:
            derived.unmatched.append(f'{product_id} subscription has no store_transaction_id')
            continue
        reported = _str(subscription.get('original_transaction_id'))
        original_txn, provisional = (reported, False) if reported else (known_subscription(product_id) or (None, True))
        base_plan = _str(subscription.get('product_plan_identifier'))
        store_product = f'{product_id}:{base_plan}' if base_plan and ':' not in product_id else product_id
        marker = {**source, 'provisional_subscription': provisional, 'entry': subscription}
        purchased = _ms(subscription.get('purchase_date')) or 0
        expires = _ms(subscription.get('expires_date'))
        first = subscription.get('purchase_date') == subscription.get('original_purchase_date')
        common = {
            **identity,
            **_store_fields(subscription),
            'product_id': store_product,
            'transaction_id': txn,
            'original_transaction_id': original_txn,
            'period_type': str(subscription.get('period_type') or 'normal').upper(),
            'purchased_at_ms': purchased,
            'expiration_at_ms': expires,
            BACKFILL_FIELD: marker,
        }
        kind = 'INITIAL_PURCHASE' if first else 'RENEWAL'
        derived.events.append(_envelope('purchase', txn, kind, purchased, common))
        refunded = _ms(subscription.get('refunded_at'))
        if refunded is not None:
            derived.events.append(_envelope('refund', txn, 'CANCELLATION', refunded, _refund(common)))
        grace = _ms(subscription.get('grace_period_expires_date'))
        ended = max(expires or 0, grace or 0)
        if expires is not None and ended <= now_ms:
            expired = {**common, 'expiration_reason': 'UNKNOWN'}
            derived.events.append(_envelope('expiration', txn, 'EXPIRATION', ended, expired))
    return derived


def _envelope(kind: str, txn: str, event_type: str, at_ms: int, fields: dict[str, Any]) -> dict[str, Any]:
    # A transaction is refunded again after a reversal: each refund the subscriber shows is an event of its own.
    event_id = f'{SYNC_PREFIX}:{kind}:{txn}' + (f':{at_ms}' if kind == 'refund' else '')
    event = {**fields, 'id': event_id, 'type': event_type, 'event_timestamp_ms': at_ms}
    return {'api_version': '1.0', 'event': event}


def _refund(common: dict[str, Any]) -> dict[str, Any]:
    price = common.get('price')
    refund = {**common, 'cancel_reason': 'CUSTOMER_SUPPORT'}
    if isinstance(price, (int, float)):
        refund['price'] = -abs(price)
    return refund


def _store_fields(entry: dict[str, Any]) -> dict[str, Any]:
    """Environment, store and (USD only, as webhooks report ``price``) the price of a subscriber entry."""
    fields: dict[str, Any] = {
        'environment': 'SANDBOX' if entry.get('is_sandbox') else 'PRODUCTION',
        'store': str(entry.get('store') or '').upper() or None,
    }
    price = _dict(entry.get('price'))
    amount = price.get('amount')
    if str(price.get('currency') or '').upper() == 'USD' and isinstance(amount, (int, float)):
        fields.update(price=amount, currency='USD')
    return fields


def _ms(value: Any) -> int | None:
    """Epoch milliseconds of an ISO 8601 date (``2019-07-26T17:40:10Z``), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace('Z', '+00:00')).timestamp() * 1000)
    except ValueError:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
