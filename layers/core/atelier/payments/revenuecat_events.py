"""What each RevenueCat event means for credits and plans.

Business keys: a purchase or renewal is granted once per store transaction (``rc:txn:{transaction_id}``);
a refund (``CANCELLATION`` with ``cancel_reason = CUSTOMER_SUPPORT``) takes back what that transaction
granted, ``REFUND_REVERSED`` gives it back; the newest of these reports decides, and each has its own
business id (``rc:refund:{transaction_id}:{event_id}``, ``rc:refund_reversed:{transaction_id}:{event_id}``).
Product ids are mapped by the commerce catalog.

Environments: a live stage applies ``PRODUCTION`` events, and ``SANDBOX`` ones only for allow-listed
tester accounts (App Review and TestFlight buy in the sandbox); other sandbox events are ignored. A test
stage applies ``SANDBOX`` events and refuses ``PRODUCTION`` ones.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection
from typing import Any

from atelier.payments.book import PaymentBook
from atelier.payments.errors import ModeMismatch
from atelier.payments.inbox import Outcome
from atelier.payments.state import AccountPlanState, GrantFact, PaymentState, Subscription

ANONYMOUS_PREFIX = '$RCAnonymousID:'

#: Present on the events the reconciliation (:mod:`atelier.payments.backfill`) derives from ``GET /subscribers``:
#: where they came from, and whether the subscription key is provisional. Real webhooks never carry it.
BACKFILL_FIELD = 'atelier_backfill'

Handler = Callable[[dict[str, Any], str], Outcome]


def authorization_matches(header: str | None, secret: str | None) -> bool:
    """Whether ``header`` is the configured value, as is or after ``Bearer `` (constant time; no secret, no match)."""
    if not secret or not secret.strip() or not header:
        return False
    given = header.strip().encode('utf-8')
    plain = hmac.compare_digest(given, secret.strip().encode('utf-8'))
    bearer = hmac.compare_digest(given, f'Bearer {secret.strip()}'.encode())
    return plain | bearer


class RevenueCatEvents:
    """Applies authentic RevenueCat webhook bodies (``{"api_version", "event"}``) to the payment book."""

    def __init__(self, book: PaymentBook, *, live: bool, sandbox_accounts: Collection[str] = ()) -> None:
        self._book = book
        self._catalog = book.catalog
        self._live = live
        self._sandbox_accounts = frozenset(sandbox_accounts)
        self._handlers: dict[str, Handler] = {
            'INITIAL_PURCHASE': self._purchase,
            'RENEWAL': self._purchase,
            'NON_RENEWING_PURCHASE': self._purchase,
            'CANCELLATION': self._cancellation,
            'UNCANCELLATION': self._noted,
            'EXPIRATION': self._expiration,
            'PRODUCT_CHANGE': self._product_change,
            'BILLING_ISSUE': self._noted,
            'REFUND_REVERSED': self._refund_reversed,
        }

    @property
    def types(self) -> tuple[str, ...]:
        """The event types this applies: those that change something, ``TRANSFER`` and the dashboard's ``TEST``."""
        return (*self._handlers, 'TRANSFER', 'TEST')

    def apply(self, body: dict[str, Any]) -> Outcome:
        event = body['event']
        event_type = str(event.get('type'))
        if event_type == 'TEST':
            return Outcome('ignored', 'RevenueCat test event')
        environment = str(event.get('environment') or 'PRODUCTION')
        if environment == 'PRODUCTION' and not self._live:
            raise ModeMismatch('A PRODUCTION store event reached a test stage; check the webhook integration.')
        if event_type == 'TRANSFER':
            return self._transfer(event, environment)
        handler = self._handlers.get(event_type)
        if handler is None:
            return Outcome('ignored', f'{event_type} is not used')
        account_id = self._account(event)
        if account_id is None:
            return Outcome('parked', f'no account for app user {event.get("app_user_id")!r}')
        if environment != 'PRODUCTION' and self._live and account_id not in self._sandbox_accounts:
            return Outcome('ignored', 'a sandbox purchase of an account that is not a tester', account_id)
        return handler(event, account_id)

    # ---------------------------------------------------------------- purchases
    def _purchase(self, event: dict[str, Any], account_id: str) -> Outcome:
        product = self._catalog.store_product(_str(event.get('product_id')))
        if product is None:
            return Outcome('parked', f'unknown product {event.get("product_id")!r}', account_id)
        transaction_id = _str(event.get('transaction_id'))
        if transaction_id is None:
            return Outcome('parked', 'purchase without a transaction_id', account_id)
        business_id = f'rc:txn:{transaction_id}'
        amount, currency = _money(event)
        if product.kind == 'pack':
            assert product.credits is not None
            grant = GrantFact(
                business_id=business_id,
                account_id=account_id,
                credits=product.credits,
                amount=amount,
                currency=currency,
                kind='paid',
                note=f'RevenueCat {product.id}',
            )
            state = self._book.apply_payment(f'rc:{transaction_id}', lambda s: s.with_grant(grant))
            return Outcome('processed', _granted(state, grant), account_id)

        plan = self._catalog.plan(product.plan)
        assert plan is not None  # the catalog checks its references
        period_end = (_int(event.get('expiration_at_ms')) or 0) // 1000
        sub_key = _subscription_key(event)
        report = Subscription(
            provider='revenuecat',
            plan=plan.id,
            status='active',
            entitled=True,
            event_at=_int(event.get('event_timestamp_ms')) or 0,
            period_end=period_end or None,
            product=product.id,
            provisional=_provisional(event),
        )
        self._book.apply_plan(account_id, _reporting(sub_key, report))
        if event.get('period_type') == 'TRIAL' and not self._catalog.policy.trial_grants_credits:
            return Outcome('processed', f'{plan.id} trial: plan on, no credits', account_id)
        state, grant = self._book.grant_period(
            f'rc:{transaction_id}',
            account_id=account_id,
            business_id=business_id,
            subscription=sub_key,
            period_end=period_end,
            plan_credits=plan.period_credits,
            amount=amount,
            currency=currency,
            note=f'RevenueCat {product.id} period',
        )
        return Outcome('processed', _granted(state, grant), account_id)

    # ---------------------------------------------------------------- cancellations and refunds
    def _cancellation(self, event: dict[str, Any], account_id: str) -> Outcome:
        transaction_id = _str(event.get('transaction_id'))
        if event.get('cancel_reason') == 'CUSTOMER_SUPPORT' and transaction_id:
            state = self._store_refund(event, transaction_id, refunded=True)
            return _reversal_outcome(state, 'refunded by the store', account_id)
        event_at = _int(event.get('event_timestamp_ms')) or 0
        sub_key, product = _subscription_key(event), self._catalog.store_product(_str(event.get('product_id')))
        self._book.apply_plan(
            account_id,
            lambda s: s.with_key_adopted(sub_key, product.id if product else None).with_renewal_off(sub_key, event_at),
        )
        return Outcome('processed', f'auto-renew off ({event.get("cancel_reason")}); credits and plan kept', account_id)

    def _refund_reversed(self, event: dict[str, Any], account_id: str) -> Outcome:
        transaction_id = _str(event.get('transaction_id'))
        if not transaction_id:
            return Outcome('parked', 'refund reversal without a transaction_id', account_id)
        state = self._store_refund(event, transaction_id, refunded=False)
        return _reversal_outcome(state, 'refund reversed', account_id)

    def _store_refund(self, event: dict[str, Any], transaction_id: str, *, refunded: bool) -> PaymentState:
        """Record a refund of the transaction (or its reversal); the newest report by ``event_timestamp_ms`` decides.

        Each report is its own fact: ``rc:refund:{transaction}:{event id}`` / ``rc:refund_reversed:...``, so a
        refund after a reversal takes back again under a business id of its own.
        """
        event_at = _int(event.get('event_timestamp_ms')) or 0
        report = _str(event.get('id')) or str(event_at)
        fact = f'rc:{"refund" if refunded else "refund_reversed"}:{transaction_id}:{report}'
        return self._book.apply_payment(
            f'rc:{transaction_id}', lambda s: s.with_store_refund(fact, refunded=refunded, event_at=event_at)
        )

    def _expiration(self, event: dict[str, Any], account_id: str) -> Outcome:
        product = self._catalog.store_product(_str(event.get('product_id')))
        if product is None or product.kind != 'subscription':
            return Outcome('ignored', 'expiration of something that is not a subscription', account_id)
        assert product.plan is not None
        report = Subscription(
            provider='revenuecat',
            plan=product.plan,
            status='expired',
            entitled=False,
            event_at=_int(event.get('event_timestamp_ms')) or 0,
            period_end=(_int(event.get('expiration_at_ms')) or 0) // 1000 or None,
            will_renew=False,
            product=product.id,
            provisional=_provisional(event),
        )
        state = self._book.apply_plan(account_id, _reporting(_subscription_key(event), report))
        return Outcome('processed', f'subscription expired; plan {self._book.plan_of(state)}; credits kept', account_id)

    def _product_change(self, event: dict[str, Any], account_id: str) -> Outcome:
        return Outcome(
            'processed', f'change to {event.get("new_product_id")!r} noted; credits come with its renewal', account_id
        )

    def _noted(self, event: dict[str, Any], account_id: str) -> Outcome:
        return Outcome('processed', f'{event.get("type")} noted; nothing to book', account_id)

    # ---------------------------------------------------------------- identity
    def _transfer(self, event: dict[str, Any], environment: str) -> Outcome:
        """Purchases moved between app users: the subscriptions (the plan) move; credits stay where they are."""
        targets = [a for a in _strings(event.get('transferred_to')) if self._book.account_exists(a)]
        if not targets:
            return Outcome('parked', f'transfer to unknown app users {event.get("transferred_to")!r}')
        to_account = targets[0]
        if environment != 'PRODUCTION' and self._live and to_account not in self._sandbox_accounts:
            return Outcome('ignored', 'a sandbox transfer to an account that is not a tester', to_account)
        moved: list[str] = []
        for from_account in _strings(event.get('transferred_from')):
            if from_account != to_account and self._book.account_exists(from_account):
                moved += self._book.move_subscriptions('revenuecat', from_account, to_account)
        return Outcome('processed', f'moved subscriptions {moved}; credits stay', to_account)

    def _account(self, event: dict[str, Any]) -> str | None:
        """The account: ``app_user_id``, else ``original_app_user_id``, else an alias (never an anonymous id)."""
        for candidate in [event.get('app_user_id'), event.get('original_app_user_id'), *_strings(event.get('aliases'))]:
            anonymous = not isinstance(candidate, str) or candidate.startswith(ANONYMOUS_PREFIX)
            if not anonymous and self._book.account_exists(candidate):
                return str(candidate)
        return None


def _reporting(key: str, report: Subscription) -> Callable[[AccountPlanState], AccountPlanState]:
    """The change that records ``report`` under ``key`` (a store report first adopts a provisional key)."""

    def change(state: AccountPlanState) -> AccountPlanState:
        if not report.provisional:
            state = state.with_key_adopted(key, report.product)
        return state.with_subscription(key, report)

    return change


def _provisional(event: dict[str, Any]) -> bool:
    """Whether a reconciled report (``BACKFILL_FIELD``) could not name the subscription's original transaction."""
    marker = event.get(BACKFILL_FIELD)
    return isinstance(marker, dict) and bool(marker.get('provisional_subscription'))


def _subscription_key(event: dict[str, Any]) -> str:
    original = _str(event.get('original_transaction_id')) or _str(event.get('transaction_id'))
    return f'rc:{original or event.get("product_id")}'


def _money(event: dict[str, Any]) -> tuple[int | None, str | None]:
    """The price paid in US cents (RevenueCat reports ``price`` in USD; negative on refunds)."""
    price = event.get('price')
    if isinstance(price, (int, float)) and not isinstance(price, bool) and price > 0:
        return round(price * 100), 'usd'
    return None, None


def _granted(state: PaymentState, grant: GrantFact) -> str:
    if state.grant is not None and state.grant.business_id != grant.business_id:
        return f'transaction already granted by {state.grant.business_id}'
    return f'{grant.credits} credits ({grant.business_id}); {state.clawed} taken back'


def _reversal_outcome(state: PaymentState, what: str, account_id: str) -> Outcome:
    if state.grant is None:
        return Outcome('processed', f'{what}; recorded until the purchase arrives', account_id)
    return Outcome('processed', f'{what}; {state.clawed} credits taken back', account_id)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strings(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str) and v] if isinstance(value, list) else []
