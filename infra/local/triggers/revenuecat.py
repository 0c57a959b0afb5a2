"""The RevenueCat events the backend handles (``atelier.payments.revenuecat_events``), as RevenueCat sends them.

Every body is ``{"api_version": "1.0", "event": {...}}`` with ``app_user_id`` = the account and
``environment`` = ``SANDBOX`` (what a test stage applies). A purchase is a new store transaction; a
follow-up (renewal, refund, expiration, ...) refers to an earlier one: ``--transaction``, or by default the
account's latest fitting transaction that the running fake RevenueCat knows (it remembers every event sent
through these triggers). A ``--transaction`` the fake does not know (made elsewhere, or before ``make dev``
restarted) is sent as given, with ``--product`` as its product, as the Stripe triggers do with an unknown
``--payment`` and ``--amount``. ``event_timestamp_ms`` is the real time of the command.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from infra.local.payment_events import DAY, rc_event, rc_purchase, uid
from infra.local.triggers.spec import Builder, Option, Request, Trigger, TriggerError

Record = dict[str, Any]

PRODUCT = Option(('--product',), {'help': 'the store product (credits_100, pro_monthly)'})
TRANSACTION = Option(
    ('--transaction',),
    {'metavar': 'TXN', 'help': "the store transaction (default: the account's latest that fits the event)"},
)
REPORTED_PRODUCT = Option(
    ('--product',),
    {'default': 'pro_monthly', 'help': 'the product of a --transaction the fake does not know (default pro_monthly)'},
)
DAYS = Option(('--days',), {'type': int, 'default': 30, 'help': 'length of a subscription period (default 30)'})


# ---------------------------------------------------------------- purchases


def purchase(event_type: str, default_product: str) -> Builder:
    def build(request: Request) -> dict[str, Any]:
        """A new store transaction: a pack, or a subscription's first period."""
        product = str(request.arg('product') or default_product)
        subscription = _is_subscription(request, product)
        fields: dict[str, Any] = {
            'expiration_at_ms': _ms(request.now + request.arg('days') * DAY) if subscription else None,
        }
        if request.arg('trial'):
            fields.update(period_type='TRIAL', price=0, price_in_purchased_currency=0)
        txn = request.arg('transaction') or uid('txn')
        return rc_purchase(
            event_type, request.account_id, product, txn, event_timestamp_ms=request.timestamp_ms, **fields
        )

    return build


def renewal(request: Request) -> dict[str, Any]:
    """The next period of the account's subscription: a new transaction of the same original one."""
    known = _find(request, _subscription_of(request, request.arg('product')), None)
    product = str(request.arg('product') or (known or {}).get('product_id') or 'pro_monthly')
    previous_end = int((known or {}).get('expiration_at_ms') or 0) // 1000
    expires = max(previous_end, request.now) + request.arg('days') * DAY
    return rc_purchase(
        'RENEWAL',
        request.account_id,
        product,
        request.arg('transaction') or uid('txn'),
        original_transaction_id=(known or {}).get('original_transaction_id') or uid('txn'),
        expiration_at_ms=_ms(expires),
        event_timestamp_ms=request.timestamp_ms,
    )


# ---------------------------------------------------------------- about an earlier transaction


def cancellation(request: Request) -> dict[str, Any]:
    """Auto-renew off (``--reason``), or with ``--refund`` (reason ``CUSTOMER_SUPPORT``) a store refund."""
    reason = 'CUSTOMER_SUPPORT' if request.arg('refund') else str(request.arg('reason'))
    refund = reason == 'CUSTOMER_SUPPORT'
    fits = (lambda t: not t.get('refunded')) if refund else _subscription_of(request, None)
    known = _latest(request, fits)
    fields = _about(known)
    if refund and isinstance(known.get('price'), (int, float)):
        fields['price'] = -abs(known['price'])
    return rc_event(
        'CANCELLATION', request.account_id, cancel_reason=reason, event_timestamp_ms=request.timestamp_ms, **fields
    )


def refund_reversed(request: Request) -> dict[str, Any]:
    """The store took back a refund: the credits the refund took come back."""
    known = _latest(request, lambda t: bool(t.get('refunded')))
    return rc_event('REFUND_REVERSED', request.account_id, event_timestamp_ms=request.timestamp_ms, **_about(known))


def subscription_report(event_type: str) -> Builder:
    def build(request: Request) -> dict[str, Any]:
        """A report on the account's subscription (the latest, or ``--transaction``)."""
        known = _latest(request, _subscription_of(request, None))
        fields = _about(known)
        if event_type == 'EXPIRATION':
            fields.update(expiration_at_ms=_ms(request.now), expiration_reason=request.arg('reason'))
        if event_type == 'PRODUCT_CHANGE':
            fields['new_product_id'] = request.arg('new_product')
        return rc_event(event_type, request.account_id, event_timestamp_ms=request.timestamp_ms, **fields)

    return build


def transfer(request: Request) -> dict[str, Any]:
    """The store's purchases moved from this account to ``--to`` (the subscriptions, so the plan, go along)."""
    moved = {'transferred_from': [request.account_id], 'transferred_to': [request.arg('to')]}
    return rc_event('TRANSFER', request.account_id, event_timestamp_ms=request.timestamp_ms, **moved)


def test_event(request: Request) -> dict[str, Any]:
    """The dashboard's test webhook: acknowledged and ignored."""
    return rc_event('TEST', request.account_id, event_timestamp_ms=request.timestamp_ms)


# ---------------------------------------------------------------- what the fake RevenueCat knows


def _find(request: Request, fits: Callable[[Record], bool], wanted: str | None) -> Record | None:
    """The known transaction ``wanted``, else the account's newest one that ``fits``."""
    known: list[Record] = list(request.known.get('transactions') or [])
    return next((t for t in known if (t.get('transaction_id') == wanted if wanted else fits(t))), None)


def _latest(request: Request, fits: Callable[[Record], bool]) -> Record:
    """The transaction ``--transaction`` (known or not), else the account's newest one that ``fits``."""
    wanted = request.arg('transaction')
    found = _find(request, fits, wanted)
    if found is not None:
        return found
    if wanted:  # a transaction made elsewhere: the event names it, with what it can say
        return {'transaction_id': wanted, 'original_transaction_id': wanted, 'product_id': request.arg('product')}
    raise TriggerError(
        f'no fitting store transaction of {request.account_id} is known to the fake RevenueCat: '
        'pass --transaction TXN, or trigger the purchase first (INITIAL_PURCHASE, NON_RENEWING_PURCHASE)'
    )


def _about(transaction: Record) -> dict[str, Any]:
    """The fields that tie an event to an earlier transaction."""
    fields = ('transaction_id', 'original_transaction_id', 'product_id', 'expiration_at_ms', 'price')
    return {k: transaction.get(k) for k in fields if transaction.get(k) is not None}


def _subscription_of(request: Request, product: str | None) -> Callable[[Record], bool]:
    def fits(transaction: Record) -> bool:
        named = str(transaction.get('product_id'))
        return _is_subscription(request, named) and (product is None or named == product)

    return fits


def _is_subscription(request: Request, product_id: str) -> bool:
    product = request.catalog.store_product(product_id)
    if product is None:
        return product_id.startswith('pro_')  # an unknown product: parked by the backend either way
    return product.kind == 'subscription'


def _ms(seconds: int) -> int:
    return seconds * 1000


def _option(flags: str, **settings: Any) -> Option:
    return Option((flags,), settings)


_EXPIRATION_REASONS = ('UNSUBSCRIBE', 'BILLING_ERROR', 'DEVELOPER_INITIATED', 'PRICE_INCREASE', 'UNKNOWN')
_CANCEL_REASONS = (*_EXPIRATION_REASONS, 'CUSTOMER_SUPPORT')

TRIGGERS: tuple[Trigger, ...] = (
    Trigger(
        'revenuecat',
        'INITIAL_PURCHASE',
        "a first purchase: a subscription (plan on, its period's credits) or a pack (its credits)",
        purchase('INITIAL_PURCHASE', 'pro_monthly'),
        (
            _option('--product', help='the store product (default pro_monthly; credits_100: a pack)'),
            TRANSACTION,
            DAYS,
            _option('--trial', action='store_true', help='a free trial period: plan on, no credits'),
        ),
    ),
    Trigger(
        'revenuecat',
        'NON_RENEWING_PURCHASE',
        "a one-time purchase: the pack's credits",
        purchase('NON_RENEWING_PURCHASE', 'credits_100'),
        (_option('--product', help='the store product (default credits_100)'), TRANSACTION, DAYS),
    ),
    Trigger(
        'revenuecat',
        'RENEWAL',
        "the subscription's next period: the plan's credits again, until it ends",
        renewal,
        (PRODUCT, _option('--transaction', metavar='TXN', help='the new transaction id (default: a new one)'), DAYS),
    ),
    Trigger(
        'revenuecat',
        'PRODUCT_CHANGE',
        "a change of the subscription's product: noted, nothing booked (credits come with its renewal)",
        subscription_report('PRODUCT_CHANGE'),
        (
            TRANSACTION,
            REPORTED_PRODUCT,
            _option('--new-product', default='pro_monthly', help='the new product (default pro_monthly)'),
        ),
    ),
    Trigger(
        'revenuecat',
        'CANCELLATION',
        'auto-renew off (credits and plan stay), or with --refund a store refund (its credits taken back)',
        cancellation,
        (
            TRANSACTION,
            _option('--reason', default='UNSUBSCRIBE', choices=_CANCEL_REASONS, help='default UNSUBSCRIBE'),
            _option('--refund', action='store_true', help='a refund: cancel_reason CUSTOMER_SUPPORT'),
        ),
    ),
    Trigger(
        'revenuecat',
        'REFUND_REVERSED',
        'a store refund reversed: the credits it took come back',
        refund_reversed,
        (TRANSACTION,),
    ),
    Trigger(
        'revenuecat',
        'UNCANCELLATION',
        'auto-renew back on: noted, nothing booked',
        subscription_report('UNCANCELLATION'),
        (TRANSACTION, REPORTED_PRODUCT),
    ),
    Trigger(
        'revenuecat',
        'BILLING_ISSUE',
        'a renewal could not be charged: noted, nothing booked (the plan stays until EXPIRATION)',
        subscription_report('BILLING_ISSUE'),
        (TRANSACTION, REPORTED_PRODUCT),
    ),
    Trigger(
        'revenuecat',
        'EXPIRATION',
        'the subscription ended: plan off (its credits stay until their own expiry)',
        subscription_report('EXPIRATION'),
        (
            TRANSACTION,
            REPORTED_PRODUCT,
            _option('--reason', default='UNSUBSCRIBE', choices=_EXPIRATION_REASONS, help='default UNSUBSCRIBE'),
        ),
    ),
    Trigger(
        'revenuecat',
        'TRANSFER',
        "the store's purchases moved to another account: the subscription (plan) moves, credits stay",
        transfer,
        (_option('--to', required=True, metavar='ACCOUNT', help='the account they move to'),),
    ),
    Trigger('revenuecat', 'TEST', "the dashboard's test event: acknowledged, ignored", test_event),
)
