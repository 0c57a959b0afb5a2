"""The commerce catalog (``catalog.json``): what money buys.

Stripe credit packs and plans (with their Stripe price ids, one set per mode: test and live), and
RevenueCat store products. Credits always come from here, never from an event's metadata: a webhook
says *what* was bought, the catalog says *how many credits* that is.

Concurrency limits are not repeated here: they belong to the plan limits in ``atelier/catalog/plans.json``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CATALOG_PATH = Path(__file__).with_name('catalog.json')

Mode = Literal['test', 'live']


class _Frozen(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)


class StripePrices(_Frozen):
    test: str
    live: str

    def for_mode(self, mode: Mode) -> str:
        return self.live if mode == 'live' else self.test


class Pack(_Frozen):
    """A one-off credit pack sold with Stripe Checkout (payment mode)."""

    id: str
    name: str
    credits: int = Field(gt=0)
    amount: int = Field(ge=0, description='Price in the currency minor unit (cents).')
    currency: str = 'usd'
    stripe_prices: StripePrices


class Plan(_Frozen):
    """A plan. Paid plans are Stripe subscriptions (subscription mode) or RevenueCat subscriptions.

    ``period_credits`` are granted for every paid period, as a lot that expires at the period's end.
    ``rank`` orders plans: an account with several live subscriptions gets the highest-ranked plan.
    """

    id: str
    name: str
    rank: int = Field(ge=0)
    period_credits: int = Field(ge=0)
    amount: int | None = Field(default=None, ge=0)
    currency: str = 'usd'
    interval: Literal['month', 'year'] | None = None
    stripe_prices: StripePrices | None = None


class StoreProduct(_Frozen):
    """A RevenueCat product id: a consumable credit pack or a subscription to a plan."""

    id: str
    kind: Literal['pack', 'subscription']
    credits: int | None = Field(default=None, gt=0)
    plan: str | None = None

    @model_validator(mode='after')
    def _consistent(self) -> StoreProduct:
        if self.kind == 'pack' and self.credits is None:
            raise ValueError(f'store pack {self.id} needs credits')
        if self.kind == 'subscription' and self.plan is None:
            raise ValueError(f'store subscription {self.id} needs a plan')
        return self


class Policy(_Frozen):
    #: Whether a free trial period ($0 Stripe invoice, RevenueCat ``period_type=TRIAL``) grants the plan's credits.
    trial_grants_credits: bool = False
    #: Stripe subscription statuses under which the subscription's plan applies.
    entitled_stripe_statuses: tuple[str, ...] = ('active', 'trialing', 'past_due')


class CommerceCatalog(_Frozen):
    packs: tuple[Pack, ...]
    plans: tuple[Plan, ...]
    revenuecat_products: tuple[StoreProduct, ...]
    policy: Policy = Policy()

    @model_validator(mode='after')
    def _references(self) -> CommerceCatalog:
        plan_ids = {p.id for p in self.plans}
        if 'free' not in plan_ids:
            raise ValueError('the catalog needs a free plan')
        for product in self.revenuecat_products:
            if product.plan is not None and product.plan not in plan_ids:
                raise ValueError(f'store product {product.id} names unknown plan {product.plan}')
        return self

    # ---------------------------------------------------------------- lookups
    def pack(self, pack_id: str | None) -> Pack | None:
        return next((p for p in self.packs if p.id == pack_id), None)

    def plan(self, plan_id: str | None) -> Plan | None:
        return next((p for p in self.plans if p.id == plan_id), None)

    @property
    def free_plan(self) -> Plan:
        plan = self.plan('free')
        assert plan is not None  # checked by the validator
        return plan

    def pack_by_price(self, price_id: str | None, mode: Mode) -> Pack | None:
        return next((p for p in self.packs if price_id and p.stripe_prices.for_mode(mode) == price_id), None)

    def plan_by_price(self, price_id: str | None, mode: Mode) -> Plan | None:
        return next(
            (p for p in self.plans if price_id and p.stripe_prices and p.stripe_prices.for_mode(mode) == price_id),
            None,
        )

    def store_product(self, product_id: str | None) -> StoreProduct | None:
        """A RevenueCat product; Google Play ids ``<subscription>:<base plan>`` also match on the subscription."""
        if not product_id:
            return None
        exact = next((p for p in self.revenuecat_products if p.id == product_id), None)
        if exact is not None or ':' not in product_id:
            return exact
        return self.store_product(product_id.split(':', 1)[0])

    def sellable_plans(self) -> tuple[Plan, ...]:
        return tuple(p for p in self.plans if p.stripe_prices is not None)


@cache
def load_commerce_catalog(path: Path = CATALOG_PATH) -> CommerceCatalog:
    """The shipped commerce catalog (parsed once per execution environment)."""
    return CommerceCatalog.model_validate(json.loads(path.read_text()))


def plan_concurrency(plan_id: str) -> int | None:
    """The plan's concurrency limit from ``atelier/catalog/plans.json`` (owned by the model catalog)."""
    try:
        from atelier.catalog.plans import load_plans
    except ImportError:  # pragma: no cover - the model catalog ships with the layer
        return None
    limits = load_plans().plans.get(plan_id)
    return limits.max_concurrent_tasks if limits else None
