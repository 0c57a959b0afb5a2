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
alone (``video``, ``image``) or in lists (``images``): every one of them is an output, except the images
fal's safety checker flagged. FLUX [dev] returns a flagged image as a black image, and says so in
``has_nsfw_concepts`` (one boolean per image, in order): those are dropped before anything is priced or
copied (:func:`filtered`).
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


#: The result field that flags images by position, and the list of images it refers to.
NSFW_FLAGS, FLAGGED_LIST = 'has_nsfw_concepts', 'images'


def _flags(result: dict[str, Any]) -> list[bool]:
    flags = result.get(NSFW_FLAGS)
    return [flag is True for flag in flags] if isinstance(flags, list) else []


def outputs(result: Any) -> tuple[JobOutput, ...]:
    """The files of a fal result, in the order the result lists them, without the images fal flagged."""
    found: list[JobOutput] = []
    if not isinstance(result, dict):
        return ()
    flags = _flags(result)
    for name, value in result.items():
        for n, item in enumerate(value if isinstance(value, list) else [value]):
            if name == FLAGGED_LIST and n < len(flags) and flags[n]:
                continue  # a black image in place of one the safety checker blocked
            output = _file(item)
            if output is not None:
                found.append(output)
    return tuple(found)


def filtered(result: Any) -> int:
    """How many images of a fal result its safety checker blocked."""
    return sum(_flags(result)) if isinstance(result, dict) else 0
