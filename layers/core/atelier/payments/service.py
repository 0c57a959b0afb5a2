"""The payments service: what the payment functions call (one call per handler).

Built once per execution environment from :class:`~atelier.config.Settings` by :func:`payments_service`.
The stripe library is imported only by the Stripe paths (:mod:`atelier.payments.stripe_gateway`), so the
RevenueCat webhook and the replay of RevenueCat events never load it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from atelier.config import (
    REVENUECAT_API_KEY,
    REVENUECAT_WEBHOOK_AUTH,
    STRIPE_API_KEY,
    STRIPE_WEBHOOK_SECRET,
    Settings,
)
from atelier.errors import DomainError, NotFound
from atelier.observability import logger
from atelier.payments.book import PaymentBook
from atelier.payments.catalog import CommerceCatalog, Mode, load_commerce_catalog, plan_concurrency
from atelier.payments.errors import (
    AlreadySubscribed,
    MalformedEvent,
    ModeMismatch,
    PaymentsUnavailable,
    UnknownItem,
    WebhookUnauthorized,
)
from atelier.payments.inbox import Outcome, PaymentInbox, WebhookAck
from atelier.payments.models import (
    BackfillRequest,
    BackfillResult,
    CheckoutIn,
    CheckoutOut,
    PackOut,
    PacksOut,
    PlanOut,
    ReplayRequest,
    ReplayResult,
    RevenueCatBackfillResult,
    StripeBackfillResult,
)
from atelier.payments.ports import CreditLedger, LedgerAccountPlans, PlanWriter
from atelier.payments.revenuecat_events import RevenueCatEvents, authorization_matches
from atelier.payments.store import PaymentsTable, StoredEvent
from atelier.payments.summary import summarize_event


class Payments:
    """Stripe and RevenueCat webhooks, checkout, the pack list and the ops replay."""

    def __init__(
        self,
        settings: Settings,
        *,
        table: PaymentsTable,
        ledger: CreditLedger,
        plans: PlanWriter,
        catalog: CommerceCatalog,
        book: PaymentBook | None = None,
    ) -> None:
        self._settings = settings
        self._table = table
        self._catalog = catalog
        self._book = book or PaymentBook(table, ledger, plans, catalog)
        self._inbox = PaymentInbox(table, summarize_event)
        self._revenuecat = RevenueCatEvents(
            self._book,
            live=settings.payments_live_mode,
            sandbox_accounts={a.strip() for a in settings.payments_sandbox_accounts.split(',') if a.strip()},
        )

    # ---------------------------------------------------------------- webhooks
    def stripe_webhook(self, body: bytes, signature: str | None) -> WebhookAck:
        """Verify, store and apply one Stripe webhook delivery."""
        from atelier.payments.stripe_gateway import verify_event

        try:
            event = verify_event(
                body,
                signature,
                secret=self._secret(STRIPE_WEBHOOK_SECRET) or '',
                tolerance=self._settings.stripe_webhook_tolerance_seconds,
            )
        except Exception as exc:
            logger.warning('stripe webhook refused', extra={'reason': str(exc), 'alert': 'payments'})
            raise
        return self._inbox.accept('stripe', event['id'], event['type'], body, event, self._stripe_events().apply)

    def revenuecat_webhook(self, body: bytes, authorization: str | None) -> WebhookAck:
        """Authenticate (fail closed), store and apply one RevenueCat webhook delivery."""
        if not authorization_matches(authorization, self._secret(REVENUECAT_WEBHOOK_AUTH)):
            logger.warning('revenuecat webhook refused', extra={'alert': 'payments'})
            raise WebhookUnauthorized('The Authorization header is not the configured RevenueCat value.')
        envelope = _revenuecat_envelope(body)
        event = envelope['event']
        return self._inbox.accept('revenuecat', event['id'], event['type'], body, envelope, self._revenuecat.apply)

    def replay(self, request: ReplayRequest) -> list[ReplayResult]:
        """Ops: apply stored events again (one, or the oldest in a status). Idempotent; a failure is reported.

        Only an event whose raw body is still kept can be applied again: one whose body has expired is answered
        ``expired`` and left as it is (a replay by status passes such events over).
        """
        if request.status is not None:
            stored = self._table.events_with_status(request.status, limit=request.limit)
        else:
            assert request.provider is not None and request.event_id is not None
            one = self._table.get_event(request.provider, request.event_id)
            if one is None:
                raise NotFound(f'no stored {request.provider} event {request.event_id}', code='event_not_found')
            stored = [one]
        return [self._replay(event) for event in stored]

    def _replay(self, stored: StoredEvent) -> ReplayResult:
        body = self._table.raw_body(stored.provider, stored.event_id)
        if body is None:
            detail = f'raw body expired{_on(stored.raw_expires_at)}; nothing applied, the record is kept'
            logger.warning(
                'payment event not replayed',
                extra={'provider': stored.provider, 'event_id': stored.event_id, 'detail': detail},
            )
            return ReplayResult(provider=stored.provider, event_id=stored.event_id, status='expired', detail=detail)
        try:
            if stored.provider == 'stripe':
                ack = self._inbox.replay(stored, json.loads(body), self._stripe_events().apply)
            else:
                ack = self._inbox.replay(stored, _revenuecat_envelope(body), self._revenuecat.apply)
        except DomainError as exc:
            status = 'rejected' if isinstance(exc, ModeMismatch) else 'failed'
            return ReplayResult(provider=stored.provider, event_id=stored.event_id, status=status, detail=exc.message)
        return ReplayResult(provider=stored.provider, event_id=stored.event_id, status=ack.status, detail=ack.detail)

    def _stripe_events(self) -> Any:
        """The Stripe rules, for webhooks, replays and the backfill alike (one way to resolve an invoice's payment)."""
        from atelier.payments.stripe_events import StripeEvents

        return StripeEvents(
            self._book,
            live=self._settings.payments_live_mode,
            invoice_payments=_LazyInvoicePayments(
                lambda: self._secret(STRIPE_API_KEY), api_base=self._settings.stripe_api_base
            ),
        )

    # ---------------------------------------------------------------- backfill
    def backfill(self, request: BackfillRequest) -> BackfillResult:
        """Ops and schedule: apply what Stripe's Events API and RevenueCat's subscribers know (see ``backfill``)."""
        from atelier.payments.backfill import PaymentsBackfill

        stripe_events = self._stripe_events()
        job = PaymentsBackfill(
            self._inbox,
            self._book,
            stripe_apply=stripe_events.apply,
            stripe_types=stripe_events.types,
            revenuecat_apply=self._revenuecat.apply,
        )
        result = BackfillResult()
        if request.stripe is not None:
            from atelier.payments.stripe_gateway import StripeEventLog

            stripe_key = self._secret(STRIPE_API_KEY)
            if stripe_key is None:
                result.stripe = StripeBackfillResult(more=True, errors=[f'secret {STRIPE_API_KEY} is not configured'])
            else:
                log = StripeEventLog(api_key=stripe_key, api_base=self._settings.stripe_api_base)
                result.stripe = job.stripe(request.stripe, log)
        if request.revenuecat is not None:
            from atelier.payments.revenuecat_api import RevenueCatApi

            rc_key = self._secret(REVENUECAT_API_KEY)
            if rc_key is None:
                result.revenuecat = RevenueCatBackfillResult(
                    subscribers_failed=len(request.revenuecat.app_user_ids),
                    errors=[f'secret {REVENUECAT_API_KEY} is not configured'],
                )
            else:
                api = RevenueCatApi(
                    api_key=rc_key,
                    api_base=self._settings.revenuecat_api_base,
                    sandbox=not self._settings.payments_live_mode,
                )
                result.revenuecat = job.revenuecat(request.revenuecat, api)
        return result

    # ---------------------------------------------------------------- selling
    def packs(self) -> PacksOut:
        """What the app can sell on the web: the packs and the paid plans."""
        return PacksOut(
            packs=[
                PackOut(id=p.id, name=p.name, credits=p.credits, amount=p.amount, currency=p.currency)
                for p in self._catalog.packs
            ],
            plans=[
                PlanOut(
                    id=p.id,
                    name=p.name,
                    period_credits=p.period_credits,
                    amount=p.amount,
                    currency=p.currency,
                    interval=p.interval,
                    max_concurrent_tasks=plan_concurrency(p.id),
                )
                for p in self._catalog.plans
            ],
        )

    def checkout(self, account_id: str, request: CheckoutIn, *, idempotency_key: str | None = None) -> CheckoutOut:
        """A Stripe Checkout Session for a pack (payment mode) or a plan (subscription mode)."""
        from atelier.payments.stripe_gateway import StripeCheckout

        mode_key: Mode = 'live' if self._settings.payments_live_mode else 'test'
        metadata = {'account_id': account_id}
        if request.pack_id is not None:
            pack = self._catalog.pack(request.pack_id)
            if pack is None:
                raise UnknownItem(f'no pack {request.pack_id!r}', details={'pack_id': request.pack_id})
            metadata['pack_id'] = pack.id
            price, item = pack.stripe_prices.for_mode(mode_key), f'pack:{pack.id}'
            params: dict[str, Any] = {'mode': 'payment', 'payment_intent_data': {'metadata': metadata}}
        else:
            plan = self._catalog.plan(request.plan_id)
            if plan is None or plan.stripe_prices is None:
                raise UnknownItem(f'no plan {request.plan_id!r} for sale', details={'plan_id': request.plan_id})
            self._refuse_second_subscription(account_id, plan.rank)
            metadata['plan_id'] = plan.id
            price, item = plan.stripe_prices.for_mode(mode_key), f'plan:{plan.id}'
            params = {'mode': 'subscription', 'subscription_data': {'metadata': metadata}}
        params.update(
            line_items=[{'price': price, 'quantity': 1}],
            client_reference_id=account_id,
            metadata=metadata,
            success_url=self._settings.checkout_success_url,
            cancel_url=self._settings.checkout_cancel_url,
        )
        checkout = StripeCheckout(api_key=self._secret(STRIPE_API_KEY) or '', api_base=self._settings.stripe_api_base)
        session = checkout.create_session(
            params, idempotency_key=checkout_idempotency_key(account_id, item, idempotency_key)
        )
        return CheckoutOut(url=session['url'], session_id=session['id'])

    def _refuse_second_subscription(self, account_id: str, rank: int) -> None:
        ranks = {p.id: p.rank for p in self._catalog.plans}
        state = self._book.plan_state(account_id)
        if any(s.entitled and ranks.get(s.plan, 0) >= rank for s in state.subscriptions.values()):
            raise AlreadySubscribed('The account already has this plan (or a better one).')

    def _secret(self, name: str) -> str | None:
        """A secret, or None when it is not configured (callers then refuse everything)."""
        try:
            value = self._settings.secret(name)
        except Exception:
            logger.error('payment secret not configured', extra={'secret': name, 'alert': 'payments'})
            return None
        return value or None


class _LazyInvoicePayments:
    """:class:`~atelier.payments.stripe_gateway.StripeInvoicePayments`, built (and the stripe library loaded) only
    when an invoice needs its PaymentIntent looked up."""

    def __init__(self, api_key: Callable[[], str | None], *, api_base: str) -> None:
        self._api_key = api_key
        self._api_base = api_base

    def paid_payment_intent(self, invoice_id: str) -> str | None:
        from atelier.payments.stripe_gateway import StripeInvoicePayments

        api_key = self._api_key()
        if api_key is None:
            raise PaymentsUnavailable(f'secret {STRIPE_API_KEY} is not configured: the invoice payment is unknown')
        return StripeInvoicePayments(api_key=api_key, api_base=self._api_base).paid_payment_intent(invoice_id)


def checkout_idempotency_key(account_id: str, item: str, client_key: str | None, *, now: float | None = None) -> str:
    """Stripe idempotency key of a checkout: the client's ``Idempotency-Key``, else one per account, item and minute.

    A double tap then gives the same session instead of two; the parameters of a key never differ.
    """
    scope = client_key if client_key else f'minute:{int((time.time() if now is None else now) // 60)}'
    digest = hashlib.sha256(f'{account_id}\n{item}\n{scope}'.encode()).hexdigest()
    return f'atelier-checkout-{digest[:48]}'


def _on(epoch_seconds: int | None) -> str:
    if epoch_seconds is None:
        return ''
    return f' on {datetime.fromtimestamp(epoch_seconds, UTC):%Y-%m-%d %H:%M} UTC'


def _revenuecat_envelope(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except ValueError as exc:
        raise MalformedEvent('The body is not JSON.') from exc
    event = envelope.get('event') if isinstance(envelope, dict) else None
    if not isinstance(event, dict) or not isinstance(event.get('id'), str) or not isinstance(event.get('type'), str):
        raise MalformedEvent('The body is not a RevenueCat event ({"event": {"id", "type", ...}}).')
    problem = _revenuecat_field_problem(event)
    if problem:
        raise MalformedEvent(f'The RevenueCat event is malformed: {problem}.')
    return dict(envelope)


#: Ids become DynamoDB keys (2 KB at most) and business ids; RevenueCat's are far shorter.
_MAX_ID = 256
_ID_FIELDS = ('id', 'type', 'app_user_id', 'original_app_user_id', 'transaction_id', 'original_transaction_id')
_MS_FIELDS = ('event_timestamp_ms', 'purchased_at_ms', 'expiration_at_ms', 'grace_period_expiration_at_ms')
# The last millisecond a datetime can hold (9999-12-31): RevenueCat's own TRANSFER sample is dated in the year 4466.
_LATEST_MS = 253_402_300_799_999


def _revenuecat_field_problem(event: dict[str, Any]) -> str | None:
    """What makes an authenticated event unusable, before anything is stored (None: nothing)."""
    for name in _ID_FIELDS:
        value = event.get(name)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= _MAX_ID):
            return f'{name} must be a string of 1 to {_MAX_ID} characters'
    for name in _MS_FIELDS:
        value = event.get(name)
        if value is not None and not (type(value) is int and 0 <= value <= _LATEST_MS):
            return f'{name} must be whole epoch milliseconds between 1970 and 9999'
    price = event.get('price')
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float) or not abs(price) < 1e7):
        return 'price must be a number below 10 million'
    return None


@cache
def payments_service(settings: Settings) -> Payments:
    """The service on the real adapters (tables from settings, the shared ledger), once per environment."""
    from atelier.aws import client
    from atelier.wiring import ledger

    dynamodb = client('dynamodb')
    return Payments(
        settings,
        table=PaymentsTable(
            settings.events_table, dynamodb, raw_retention=timedelta(days=settings.raw_event_retention_days)
        ),
        ledger=ledger(),
        plans=LedgerAccountPlans(ledger(), settings.ledger_table, dynamodb),
        catalog=load_commerce_catalog(),
    )


__all__ = ['Outcome', 'Payments', 'checkout_idempotency_key', 'payments_service']
