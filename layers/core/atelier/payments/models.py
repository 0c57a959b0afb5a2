"""Request and response models of the payments API (``GET /v1/packs``, ``POST /v1/checkout``, replays)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    """Exactly one of ``pack_id`` (a credit pack) or ``plan_id`` (a subscription)."""

    model_config = ConfigDict(extra='forbid')

    pack_id: str | None = Field(default=None, max_length=64)
    plan_id: str | None = Field(default=None, max_length=64)

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
    status: str = Field(description='processed | ignored | parked | rejected | failed')
    detail: str = ''
