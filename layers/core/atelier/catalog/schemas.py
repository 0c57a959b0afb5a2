"""Input schemas, one pydantic model per model family.

A model in ``models.json`` names its ``family``; the family's model validates what a client sends
as ``input``. Every schema forbids unknown fields, so a typo is a 422 rather than a silent default.
Files a client uploaded first are referenced by their upload key (:data:`UploadKey`); the task
domain checks that the key belongs to the caller's own account.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from atelier.jsontypes import JsonInt, JsonUInt32

UPLOADS_PREFIX = 'uploads/'

#: A key returned by ``POST /v1/uploads``: ``uploads/{account_id}/{name}``.
UploadKey = Annotated[str, StringConstraints(pattern=r'^uploads/[^/]{1,128}/[A-Za-z0-9][A-Za-z0-9._-]{0,127}$')]
#: Not blank: at least one character other than a space, tab or line break (an explicit class, so that the
#: document's pattern means the same to every regex engine; ``\s`` differs between them).
Prompt = Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=r'[^ \t\n\r]')]


class FamilyInput(BaseModel):
    # strict: JSON types as sent (``true`` is not 1, ``"4"`` is not 4): a wrong type is a 422, never coerced
    model_config = ConfigDict(extra='forbid', frozen=True, strict=True)

    def image_count(self) -> int:
        """How many images the request produces (priced per image)."""
        return int(getattr(self, 'num_images', 0) or 0)

    def video_seconds(self) -> float:
        """How many seconds of video the request produces (priced per second)."""
        return float(getattr(self, 'duration_seconds', 0) or 0)


class TextToImageInput(FamilyInput):
    prompt: Prompt
    negative_prompt: Annotated[str, StringConstraints(max_length=2000)] | None = None
    num_images: JsonInt = Field(default=1, ge=1, le=4)
    resolution: Literal['512x512', '1024x1024'] = '1024x1024'
    quality: Literal['standard', 'hd'] = 'standard'
    seed: JsonUInt32 | None = None


class ImageToVideoInput(FamilyInput):
    prompt: Prompt
    image: UploadKey
    duration_seconds: JsonInt = Field(default=5, ge=1, le=10)
    resolution: Literal['720p', '1080p'] = '720p'


class KlingImageToVideoInput(FamilyInput):
    """fal's Kling 2 image to video (``fal-ai/kling-video/v2/master/image-to-video``): 5 or 10 seconds, no
    resolution to choose (https://fal.ai/models/fal-ai/kling-video/v2/master/image-to-video)."""

    prompt: Prompt
    image: UploadKey
    duration_seconds: Literal[5, 10] = 5
    negative_prompt: Annotated[str, StringConstraints(max_length=2000)] | None = None


class MockImageInput(FamilyInput):
    """The local ``mock`` models. ``fail_submits`` makes the mock provider refuse that many submits (503)."""

    prompt: Prompt
    num_images: JsonInt = Field(default=1, ge=1, le=4)
    image: UploadKey | None = None
    fail_submits: JsonInt = Field(default=0, ge=0, le=3)


class MockVideoInput(FamilyInput):
    prompt: Prompt
    duration_seconds: JsonInt = Field(default=4, ge=1, le=10)
    resolution: Literal['480p', '720p'] = '480p'
    image: UploadKey | None = None
    fail_submits: JsonInt = Field(default=0, ge=0, le=3)


FAMILIES: dict[str, type[FamilyInput]] = {
    'text_to_image': TextToImageInput,
    'image_to_video': ImageToVideoInput,
    'kling_image_to_video': KlingImageToVideoInput,
    'mock_image': MockImageInput,
    'mock_video': MockVideoInput,
}
