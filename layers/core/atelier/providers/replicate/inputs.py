"""Our family inputs as a Replicate model's inputs, and back (to price what a prediction produced).

A catalog ``provider_model`` names the model as ``owner/name`` (an official model, run through
``POST /v1/models/{owner}/{name}/predictions``) or ``owner/name:version`` (any model version, through
``POST /v1/predictions``). Field names follow Replicate's common image-model inputs:

==================  =========================================================================
ours                Replicate
==================  =========================================================================
``num_images``      ``num_outputs``
``resolution``      ``width`` and ``height`` (``1024x1024``); other values (``720p``) as they are
``quality``         ``num_inference_steps`` for the models in :data:`INFERENCE_STEPS`, else as is
anything else       as it is (``prompt``, ``negative_prompt``, ``seed``, ``image``, ...)
==================  =========================================================================
"""

from __future__ import annotations

import re
from typing import Any

#: Denoising steps per quality, for the models that take ``num_inference_steps``.
INFERENCE_STEPS: dict[str, dict[str, int]] = {
    'stability-ai/sdxl': {'standard': 25, 'hd': 50},
}
_SIZE = re.compile(r'^(\d{2,5})x(\d{2,5})$')


def split_model(provider_model: str) -> tuple[str, str | None]:
    """``owner/name[:version]`` -> (``owner/name``, version or None)."""
    name, _, version = provider_model.partition(':')
    return name, version or None


def to_provider(model: str, data: dict[str, Any]) -> dict[str, Any]:
    """Our (validated) input for Replicate model ``model`` (``owner/name``)."""
    steps = INFERENCE_STEPS.get(model)
    out: dict[str, Any] = {}
    for field, value in data.items():
        size = _SIZE.match(value) if field == 'resolution' and isinstance(value, str) else None
        if field == 'num_images':
            out['num_outputs'] = value
        elif size is not None:
            out['width'], out['height'] = int(size.group(1)), int(size.group(2))
        elif field == 'quality' and steps is not None and value in steps:
            out['num_inference_steps'] = steps[value]
        else:
            out[field] = value
    return out


def to_family(model: str, data: dict[str, Any]) -> dict[str, Any]:
    """What :func:`to_provider` made of our input, back in our field names (for pricing)."""
    steps = {count: quality for quality, count in INFERENCE_STEPS.get(model, {}).items()}
    out: dict[str, Any] = {}
    for field, value in data.items():
        if field == 'num_outputs':
            out['num_images'] = value
        elif field in {'width', 'height'}:
            continue
        elif field == 'num_inference_steps' and value in steps:
            out['quality'] = steps[value]
        else:
            out[field] = value
    if isinstance(data.get('width'), int) and isinstance(data.get('height'), int):
        out['resolution'] = f'{data["width"]}x{data["height"]}'
    return out
