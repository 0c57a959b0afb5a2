"""S3 media storage: task outputs copied in from providers, client uploads, presigned URLs."""

from atelier.storage.media import (
    MediaDeletionFailed,
    MediaStore,
    OutputDownloadFailed,
    OutputUnavailable,
    StoredObject,
    account_media_prefixes,
    extension_for,
)

__all__ = [
    'MediaDeletionFailed',
    'MediaStore',
    'OutputDownloadFailed',
    'OutputUnavailable',
    'StoredObject',
    'account_media_prefixes',
    'extension_for',
]
