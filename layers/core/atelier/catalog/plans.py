"""Plan limits (``plans.json``): how many tasks an account on each plan may run at once."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

PLANS_PATH = Path(__file__).with_name('plans.json')


class PlanLimits(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)

    max_concurrent_tasks: int = Field(gt=0)


class Plans(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)

    default: str
    plans: dict[str, PlanLimits]

    def limits(self, plan: str | None) -> PlanLimits:
        """The limits of ``plan``; an unknown or missing plan gets the default plan's."""
        return self.plans.get(plan or self.default) or self.plans[self.default]


@cache
def load_plans(path: Path = PLANS_PATH) -> Plans:
    return Plans.model_validate(json.loads(path.read_text()))


def plan_limits(plan: str | None) -> PlanLimits:
    """The limits of ``plan`` from the shipped ``plans.json``."""
    return load_plans().limits(plan)
