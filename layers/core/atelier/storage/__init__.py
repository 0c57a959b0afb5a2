"""S3 media storage: task outputs copied in from providers, client uploads, presigned URLs."""

from atelier.storage.media import (
    MediaDeletionFailed,
    MediaStore,
    OutputDownloadFailed,
    OutputTooLarge,
    OutputUnavailable,
    StoredObject,
    account_media_prefixes,
    extension_for,
)
from atelier.storage.output_policy import OutputPolicy, OutputRefused

__all__ = [
    'MediaDeletionFailed',
    'MediaStore',
    'OutputDownloadFailed',
    'OutputPolicy',
    'OutputRefused',
    'OutputTooLarge',
    'OutputUnavailable',
    'StoredObject',
    'account_media_prefixes',
    'extension_for',
]
