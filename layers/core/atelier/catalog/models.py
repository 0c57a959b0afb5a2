"""The model catalog: ``models.json`` loaded into typed specs.

The catalog is configuration data, shipped in the core layer: which models exist, which provider
runs each one, the family schema its input must satisfy, its limits and its pricing formula.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from atelier.catalog.pricing import Pricing, Usage, price
from atelier.catalog.schemas import FAMILIES, FamilyInput
from atelier.errors import InvalidInput, NotFound

CATALOG_PATH = Path(__file__).with_name('models.json')


class UnknownModel(NotFound):
    """A model this deployment does not run (404: ``GET /v1/models`` lists those it does)."""

    code = 'unknown_model'


class Limits(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)

    #: A task that has not finished this long after its creation is canceled and refunded.
    deadline_seconds: int = Field(gt=0)
    #: How long to wait for the provider's webhook before asking the provider directly.
    webhook_wait_seconds: int = Field(gt=0)
    #: How often to ask the provider once the first wait is over.
    poll_interval_seconds: int = Field(gt=0)
    #: How long the model usually runs once started (0: not declared). A provider whose own deadline covers only
    #: the start (fal's ``X-Fal-Request-Timeout``) is told to start within the time left minus this, so that a
    #: job does not start just before the task's deadline and run, billed, after the task was refunded.
    expected_run_seconds: int = Field(default=0, ge=0)

    @model_validator(mode='after')
    def _run_fits_the_deadline(self) -> Limits:
        if self.expected_run_seconds >= self.deadline_seconds:
            raise ValueError('expected_run_seconds must be shorter than deadline_seconds')
        return self


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra='forbid', frozen=True)

    id: str
    provider: str
    provider_model: str
    family: str
    kind: Literal['image', 'video']
    title: str
    description: str = ''
    limits: Limits
    pricing: Pricing

    @property
    def input_model(self) -> type[FamilyInput]:
        return FAMILIES[self.family]

    def validate_input(self, data: Any) -> FamilyInput:
        """``data`` as this model's family input; :class:`InvalidInput` (422) with details if it is not."""
        try:
            return self.input_model.model_validate(data)
        except ValidationError as exc:
            details = [
                {'loc': ['input', *(str(p) for p in e['loc'])], 'type': e['type'], 'message': e['msg']}
                for e in exc.errors()
            ]
            raise InvalidInput(f'The input is not valid for model {self.id}.', details={'errors': details}) from exc

    def estimate(self, data: FamilyInput) -> int:
        """The credits held for ``data`` (the most the task can cost)."""
        usage = Usage(images=data.image_count(), seconds=data.video_seconds())
        return price(self.pricing, usage, data.model_dump())

    def actual_cost(self, data: dict[str, Any], *, images: int | None = None, seconds: float | None = None) -> int:
        """The credits for what the provider actually produced; what it did not report is taken as requested."""
        # Not validated again: what the provider echoes back has upload keys replaced by URLs.
        requested = self.input_model.model_construct(**data)
        usage = Usage(
            images=requested.image_count() if images is None else images,
            seconds=requested.video_seconds() if seconds is None else seconds,
        )
        return price(self.pricing, usage, requested.model_dump())


class Catalog:
    """Every model, by id."""

    def __init__(self, models: Iterable[ModelSpec]) -> None:
        self._models = {m.id: m for m in models}

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._models.values())

    def get(self, model_id: str) -> ModelSpec:
        try:
            return self._models[model_id]
        except KeyError:
            raise UnknownModel(f'There is no model {model_id!r}.') from None

    def available(self, providers: Iterable[str], offered: Callable[[ModelSpec], bool] | None = None) -> Catalog:
        """The models that the given (configured) providers can run (and, given ``offered``, that it offers:
        a RunPod model needs an endpoint configured for it)."""
        enabled = set(providers)
        return Catalog(m for m in self._models.values() if m.provider in enabled and (offered is None or offered(m)))


@cache
def load_catalog(path: Path = CATALOG_PATH) -> Catalog:
    """The catalog shipped with the layer (parsed once per execution environment)."""
    raw = json.loads(path.read_text())
    models = [ModelSpec.model_validate(m) for m in raw['models']]
    for model in models:
        if model.family not in FAMILIES:
            raise ValueError(f'model {model.id} names unknown family {model.family}')
    return Catalog(models)


class ModelLimitsView(BaseModel):
    deadline_seconds: int


class ModelView(BaseModel):
    """A model as ``GET /v1/models`` shows it: what it takes (JSON Schema) and how it is priced."""

    id: str
    provider: str
    kind: str
    title: str
    description: str
    input_schema: dict[str, Any]
    pricing: Pricing
    limits: ModelLimitsView

    @classmethod
    def of(cls, model: ModelSpec) -> ModelView:
        return cls(
            id=model.id,
            provider=model.provider,
            kind=model.kind,
            title=model.title,
            description=model.description,
            input_schema=model.input_model.model_json_schema(),
            pricing=model.pricing,
            limits=ModelLimitsView(deadline_seconds=model.limits.deadline_seconds),
        )


class ModelList(BaseModel):
    items: list[ModelView]
