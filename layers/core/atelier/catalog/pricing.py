"""The pricing formula of ``models.json``, in exact arithmetic.

``credits = ceil((base + per_image * images + per_second * seconds) * product(factors))``, where each
factor is looked up by the value of one input field (``resolution``, ``quality``, ...). Prices are
computed with :class:`fractions.Fraction` so that ``1.5`` never becomes ``1.4999...``; the result is
rounded up to a whole credit, and never below one.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Pricing(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)

    base: int = Field(default=0, ge=0)
    per_image: int = Field(default=0, ge=0)
    per_second: int = Field(default=0, ge=0)
    factors: dict[str, dict[str, float]] = Field(default_factory=dict)


class Usage(BaseModel):
    """What a request produces (or, reported by a provider, what it actually produced)."""

    model_config = ConfigDict(frozen=True)

    images: int = Field(default=0, ge=0)
    seconds: float = Field(default=0, ge=0)


def price(pricing: Pricing, usage: Usage, fields: dict[str, Any]) -> int:
    """Credits for ``usage`` under ``pricing``, with factors chosen by the input ``fields``."""
    amount = Fraction(pricing.base) + pricing.per_image * Fraction(usage.images)
    amount += pricing.per_second * Fraction(str(usage.seconds))
    for field_name, table in pricing.factors.items():
        value = fields.get(field_name)
        if value is not None and str(value) in table:
            amount *= Fraction(str(table[str(value)]))
    return max(1, math.ceil(amount))
