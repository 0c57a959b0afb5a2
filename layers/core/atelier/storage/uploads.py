"""Client uploads for task inputs: a presigned POST limited to one content type and size, under the account's prefix."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from atelier.errors import InvalidInput
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


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra='forbid', strict=True)  # a boolean is not a size

    content_type: str = Field(min_length=1, max_length=100)
    size: int = Field(gt=0)


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


class UnsupportedUpload(InvalidInput):
    code = 'unsupported_upload'


def create_upload(account_id: str, request: UploadRequest, media: MediaStore) -> Upload:
    """A presigned upload of ``request.size`` bytes at most of ``request.content_type``."""
    content_type = request.content_type.split(';')[0].strip().lower()
    limit = MAX_UPLOAD_BYTES.get(content_type)
    if limit is None:
        raise UnsupportedUpload(
            f'Uploads of {content_type!r} are not accepted.', details={'accepted': sorted(MAX_UPLOAD_BYTES)}
        )
    if request.size > limit:
        raise UnsupportedUpload(f'{content_type} uploads are limited to {limit} bytes.', details={'max_size': limit})
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
