"""Client uploads for task inputs: a presigned POST limited to one content type and size, under the account's prefix."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from atelier.jsontypes import JsonInt
from atelier.storage.media import MediaStore, account_media_prefixes, extension_for

#: What clients may upload, and how large each kind may be.
MAX_UPLOAD_BYTES = {
    'image/png': 20 * 1024**2,
    'image/jpeg': 20 * 1024**2,
    'image/webp': 20 * 1024**2,
    'video/mp4': 200 * 1024**2,
    'audio/mpeg': 50 * 1024**2,
    'audio/wav': 50 * 1024**2,
}
UPLOAD_URL_SECONDS = 900


ContentType = Literal['image/png', 'image/jpeg', 'image/webp', 'video/mp4', 'audio/mpeg', 'audio/wav']


def _size_limit_per_type(schema: dict[str, Any]) -> None:
    """Document each content type's size limit (one branch per limit), as :class:`UploadRequest` enforces it."""
    limits: dict[int, list[str]] = {}
    for content_type, limit in MAX_UPLOAD_BYTES.items():
        limits.setdefault(limit, []).append(content_type)
    # if/then, not oneOf: the request stays one object type (a generated client gets one class, not three)
    schema['allOf'] = [
        {'if': {'properties': {'content_type': {'enum': types}}}, 'then': {'properties': {'size': {'maximum': limit}}}}
        for limit, types in sorted(limits.items())
    ]


class UploadRequest(BaseModel):
    """The file to upload: its exact content type and its size in bytes (at most the type's limit)."""

    # strict: a boolean is not a size
    model_config = ConfigDict(extra='forbid', strict=True, json_schema_extra=_size_limit_per_type)

    content_type: ContentType
    size: JsonInt = Field(gt=0, examples=[524288])

    @model_validator(mode='after')
    def _within_limit(self) -> UploadRequest:
        limit = MAX_UPLOAD_BYTES[self.content_type]
        if self.size > limit:
            raise ValueError(f'{self.content_type} uploads are limited to {limit} bytes')
        return self


class PresignedPost(BaseModel):
    url: str
    fields: dict[str, str]


class Upload(BaseModel):
    """Where to POST the file (multipart form: ``fields`` then ``file``) and the key to use in task input."""

    key: str
    upload: PresignedPost
    content_type: str
    max_size: int
    expires_in: int


def create_upload(account_id: str, request: UploadRequest, media: MediaStore) -> Upload:
    """A presigned upload of ``request.size`` bytes at most of ``request.content_type`` (checked by the request)."""
    content_type = request.content_type
    _, uploads = account_media_prefixes(account_id)
    key = f'{uploads}{uuid.uuid4().hex}.{extension_for(content_type)}'
    post: dict[str, Any] = media.presigned_upload(
        key, content_type=content_type, size=request.size, expires_in=UPLOAD_URL_SECONDS
    )
    return Upload(
        key=key,
        upload=PresignedPost(url=post['url'], fields={k: str(v) for k, v in post['fields'].items()}),
        content_type=content_type,
        max_size=request.size,
        expires_in=UPLOAD_URL_SECONDS,
    )
