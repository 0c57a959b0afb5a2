"""The catalog as configuration data: models (``models.json``) and plans (``plans.json``)."""

from atelier.catalog.models import Catalog, Limits, ModelSpec, UnknownModel, load_catalog
from atelier.catalog.plans import PlanLimits, load_plans, plan_limits

__all__ = [
    'Catalog',
    'Limits',
    'ModelSpec',
    'PlanLimits',
    'UnknownModel',
    'load_catalog',
    'load_plans',
    'plan_limits',
]
