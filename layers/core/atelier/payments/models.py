"""Request and response models of the payments API (``GET /v1/packs``, ``POST /v1/checkout``, replays)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.json_schema import SkipJsonSchema


class PackOut(BaseModel):
    id: str
    name: str
    credits: int
    amount: int = Field(description='Price in the currency minor unit (cents).')
    currency: str


class PlanOut(BaseModel):
    id: str
    name: str
    period_credits: int = Field(description='Credits granted for every paid period; they expire at its end.')
    amount: int | None
    currency: str
    interval: str | None
    max_concurrent_tasks: int | None


class PacksOut(BaseModel):
    packs: list[PackOut]
    plans: list[PlanOut]


class CheckoutIn(BaseModel):
    """Exactly one of ``pack_id`` (a credit pack) or ``plan_id`` (a subscription), ids from ``GET /v1/packs``."""

    model_config = ConfigDict(
        extra='forbid',
        json_schema_extra={'oneOf': [{'required': ['pack_id']}, {'required': ['plan_id']}]},
    )

    # Left out, never null: the schema says string (SkipJsonSchema hides the None that only the default may be).
    pack_id: str | SkipJsonSchema[None] = Field(default=None, min_length=1, max_length=64, examples=['pack_100'])
    plan_id: str | SkipJsonSchema[None] = Field(default=None, min_length=1, max_length=64, examples=['pro'])

    @field_validator('pack_id', 'plan_id', mode='before')
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError('send a string, or leave the field out')
        return value

    @model_validator(mode='after')
    def _exactly_one(self) -> CheckoutIn:
        if (self.pack_id is None) == (self.plan_id is None):
            raise ValueError('send exactly one of pack_id or plan_id')
        return self


class CheckoutOut(BaseModel):
    url: str
    session_id: str


class ReplayRequest(BaseModel):
    """Admin replay: one stored event (``provider`` + ``event_id``), or up to ``limit`` events in ``status``."""

    model_config = ConfigDict(extra='forbid')

    provider: Literal['stripe', 'revenuecat'] | None = None
    event_id: str | None = None
    status: Literal['failed', 'received', 'parked'] | None = None
    limit: int = Field(default=25, gt=0, le=100)

    @model_validator(mode='after')
    def _one_way(self) -> ReplayRequest:
        single = self.provider is not None and self.event_id is not None
        if single == (self.status is not None):
            raise ValueError('give provider and event_id, or status')
        return self


class ReplayResult(BaseModel):
    provider: str
    event_id: str
    status: str = Field(
        description='processed | ignored | parked | rejected | failed | expired (its raw body is no longer kept)'
    )
    detail: str = ''


# ---------------------------------------------------------------- backfill (BackfillPaymentsFunction)


class StripeBackfill(BaseModel):
    """Stripe events from the Events API (the last 30 days), applied like webhook deliveries."""

    model_config = ConfigDict(extra='forbid')

    since: int | None = Field(default=None, ge=0, description='Only events created at or after (unix seconds).')
    undelivered_only: bool = Field(
        default=True, description='Only events whose webhook deliveries did not all succeed (delivery_success=false).'
    )
    starting_after: str | None = Field(default=None, max_length=255, description='Resume after this event id.')
    max_events: int = Field(default=1000, gt=0, le=10_000)


class RevenueCatBackfill(BaseModel):
    """RevenueCat subscribers (``GET /v1/subscribers/{id}``) reconciled with the ledger."""

    model_config = ConfigDict(extra='forbid')

    app_user_ids: list[str] = Field(min_length=1, max_length=100)


class BackfillRequest(BaseModel):
    """``{"stripe": {...}}`` and/or ``{"revenuecat": {"app_user_ids": [...]}}``."""

    model_config = ConfigDict(extra='forbid')

    stripe: StripeBackfill | None = None
    revenuecat: RevenueCatBackfill | None = None

    @model_validator(mode='after')
    def _something(self) -> BackfillRequest:
        if self.stripe is None and self.revenuecat is None:
            raise ValueError('give stripe and/or revenuecat')
        return self

    @classmethod
    def from_event(cls, event: dict[str, object]) -> BackfillRequest:
        """The request in a Lambda event; a bare EventBridge schedule event means the default Stripe backfill."""
        if event.get('source') == 'aws.events' and event.get('detail-type') == 'Scheduled Event':
            return cls(stripe=StripeBackfill())
        return cls.model_validate(event)


class BackfillTally(BaseModel):
    """What became of the events a backfill applied (``duplicate``: already settled, nothing changed)."""

    events: int = 0
    processed: int = 0
    duplicate: int = 0
    ignored: int = 0
    parked: int = 0
    rejected: int = 0
    failed: int = 0
    errors: list[str] = Field(default_factory=list, description='The first problems met, for ops.')

    def count(self, status: str) -> None:
        self.events += 1
        setattr(self, status, getattr(self, status) + 1)

    def problem(self, text: str) -> None:
        if len(self.errors) < 20:
            self.errors.append(text[:300])


class StripeBackfillResult(BackfillTally):
    more: bool = Field(default=False, description='Stopped at max_events; run again with resume_after.')
    resume_after: str | None = None


class RevenueCatBackfillResult(BackfillTally):
    subscribers: int = Field(default=0, description='Subscribers fetched from RevenueCat.')
    subscribers_failed: int = Field(default=0, description='Subscribers RevenueCat could not give now (retry).')
    unmatched: int = Field(default=0, description='Purchases without a store transaction id (cannot be matched).')


class BackfillResult(BaseModel):
    stripe: StripeBackfillResult | None = None
    revenuecat: RevenueCatBackfillResult | None = None
