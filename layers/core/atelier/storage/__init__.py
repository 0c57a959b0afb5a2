"""S3 media storage: task outputs copied in from providers, client uploads, presigned URLs."""

from atelier.storage.media import (
    MediaStore,
    OutputDownloadFailed,
    OutputUnavailable,
    StoredObject,
    extension_for,
)

__all__ = ['MediaStore', 'OutputDownloadFailed', 'OutputUnavailable', 'StoredObject', 'extension_for']
