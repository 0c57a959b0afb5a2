"""Our family inputs as fal model inputs, and fal's file outputs as ours.

Field names follow fal's common model schemas (``fal-ai/flux/dev``, ``fal-ai/kling-video/...``). Each
model's family input (catalog) allows only what its fal endpoint takes: Kling 2 image to video has its own
family (``kling_image_to_video``: no ``resolution``, 5 or 10 seconds), since fal answers 422 to anything else.

==================  ===========================================================================
ours                fal
==================  ===========================================================================
``resolution``      ``image_size`` for the square sizes (``square``, ``square_hd``), else as is
``quality``         ``num_inference_steps`` (:data:`INFERENCE_STEPS`)
``image``           ``image_url`` (a presigned URL by then)
``duration_seconds`` ``duration`` (a string: Kling takes ``"5"``/``"10"``, which its family input allows)
anything else       as it is (``prompt``, ``negative_prompt``, ``num_images``, ``seed``, ...)
==================  ===========================================================================

A result is a JSON object whose files are fal ``File`` objects (``{"url", "content_type", ...}``),
alone (``video``, ``image``) or in lists (``images``): every one of them is an output.
"""

from __future__ import annotations

from typing import Any

from atelier.providers.base import JobOutput
from atelier.providers.common import content_type_for

IMAGE_SIZES = {'512x512': 'square', '1024x1024': 'square_hd'}
INFERENCE_STEPS = {'standard': 28, 'hd': 50}


def to_provider(data: dict[str, Any]) -> dict[str, Any]:
    """Our (validated) input for a fal model."""
    out: dict[str, Any] = {}
    for field, value in data.items():
        if field == 'resolution' and value in IMAGE_SIZES:
            out['image_size'] = IMAGE_SIZES[value]
        elif field == 'quality' and value in INFERENCE_STEPS:
            out['num_inference_steps'] = INFERENCE_STEPS[value]
        elif field == 'image':
            out['image_url'] = value
        elif field == 'duration_seconds':
            out['duration'] = str(value)
        else:
            out[field] = value
    return out


def _file(value: Any) -> JobOutput | None:
    url = value.get('url') if isinstance(value, dict) else None
    if not isinstance(url, str) or not (url.startswith(('https://', 'http://')) or url[:5].lower() == 'data:'):
        return None
    declared = value.get('content_type')
    guessed = content_type_for(url)
    content_type = declared if isinstance(declared, str) and '/' in declared else guessed
    return JobOutput(url=url, content_type=content_type.split(';')[0].strip().lower())


def outputs(result: Any) -> tuple[JobOutput, ...]:
    """The files of a fal result, in the order the result lists them."""
    found: list[JobOutput] = []
    for value in result.values() if isinstance(result, dict) else ():
        for item in value if isinstance(value, list) else [value]:
            output = _file(item)
            if output is not None:
                found.append(output)
    return tuple(found)
