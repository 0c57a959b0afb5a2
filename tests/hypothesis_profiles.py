"""How long the model-based tests search: a small run in ``make test``, a long one in ``make test-long``.

``ATELIER_TEST_PROFILE`` picks the profile: ``small`` (the default) runs each model test with the number of
sequences it asks for; ``long`` runs at least :data:`LONG_EXAMPLES` sequences per model and backend.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE_VARIABLE = 'ATELIER_TEST_PROFILE'
PROFILES = ('small', 'long')
LONG_EXAMPLES = 1000


def profile() -> str:
    name = os.environ.get(PROFILE_VARIABLE, '').strip() or 'small'
    if name not in PROFILES:
        raise ValueError(f'{PROFILE_VARIABLE}={name!r}: use one of {", ".join(PROFILES)}')
    return name


def model_settings(*, examples: int, steps: int) -> settings:
    """Settings of a stateful model test: ``examples`` sequences of up to ``steps`` steps (at least
    :data:`LONG_EXAMPLES` sequences in the long profile); no deadline, these drive real stores."""
    if profile() == 'long':
        examples = max(examples, LONG_EXAMPLES)
    return settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
