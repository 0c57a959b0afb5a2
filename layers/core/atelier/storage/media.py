"""The media bucket: outputs under ``outputs/{account_id}/{task_id}/{n}.{ext}``, uploads under
``uploads/{account_id}/``.

Outputs are streamed from the provider's URL into S3 (never held whole in memory) while their size
and SHA-256 are computed, because providers delete outputs within hours (Replicate after one hour):
a task is only marked succeeded once its outputs are ours. Only URLs the :class:`OutputPolicy` allows
are fetched, redirects one checked hop at a time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote_to_bytes, urljoin

from pydantic import BaseModel, ConfigDict

from atelier.errors import DomainError, ErrorKind
from atelier.storage.output_policy import OutputPolicy, OutputRefused

_EXTENSIONS = {
    'image/png': 'png',
    'image/jpeg': 'jpg',
    'image/webp': 'webp',
    'image/gif': 'gif',
    'video/mp4': 'mp4',
    'video/webm': 'webm',
    'video/quicktime': 'mov',
    'audio/mpeg': 'mp3',
    'audio/wav': 'wav',
}


class OutputUnavailable(DomainError):
    """The provider's output is gone or refused for good (404/410/403, too large): the task fails."""

    kind = ErrorKind.INVALID
    code = 'output_unavailable'


class OutputTooLarge(OutputUnavailable):
    """The output is larger than the size cap (said by ``Content-Length`` or counted while streaming)."""

    code = 'output_too_large'


class OutputDownloadFailed(DomainError):
    """Fetching an output failed in a way that may pass (5xx, timeout): the step is retried."""

    kind = ErrorKind.UNAVAILABLE
    code = 'output_download_failed'


class MediaDeletionFailed(DomainError):
    """S3 refused to delete some objects (DeleteObjects answered errors): the deletion is retried."""

    kind = ErrorKind.UNAVAILABLE
    code = 'media_deletion_failed'


class StoredObject(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    content_type: str
    size: int
    sha256: str


def account_media_prefixes(account_id: str) -> tuple[str, str]:
    """Where an account's objects live: its task outputs and its uploads (deleted with the account)."""
    return f'outputs/{account_id}/', f'uploads/{account_id}/'


def extension_for(content_type: str) -> str:
    return _EXTENSIONS.get(content_type.split(';')[0].strip().lower(), 'bin')


def _data_uri(url: str, content_type: str) -> tuple[str, Iterator[bytes]]:
    """The media type (``content_type`` unless that is generic) and the bytes of a ``data:`` URI."""
    header, comma, data = url[5:].partition(',')
    params = [p.strip().lower() for p in header.split(';')]
    try:
        if not comma:
            raise ValueError('no comma')
        raw = base64.b64decode(data, validate=True) if 'base64' in params[1:] else unquote_to_bytes(data)
    except (binascii.Error, ValueError):
        raise OutputUnavailable('The output is a malformed data: URI.') from None
    if content_type in {'', 'application/octet-stream'} and params[0]:
        content_type = params[0]
    return content_type, iter([raw])


class _HashingReader:
    """A read-only file over an iterator of chunks that counts and hashes what passes through."""

    def __init__(self, chunks: Iterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self._buffer = b''
        self._limit = limit
        self.size = 0
        self.sha256 = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self.size += len(chunk)
            if self.size > self._limit:
                raise OutputTooLarge(f'The output is larger than {self._limit} bytes.')
            self.sha256.update(chunk)
            self._buffer += chunk
        if n < 0:
            data, self._buffer = self._buffer, b''
        else:
            data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


class MediaStore:
    """The media bucket. ``s3`` and ``http`` default to the shared boto3 client and a new httpx client;
    ``policy`` (default: the providers' public output hosts) says which output URLs may be fetched."""

    def __init__(self, bucket: str, *, s3: Any = None, http: Any = None, policy: OutputPolicy | None = None) -> None:
        self.bucket = bucket
        self._s3 = s3
        self._http = http
        self.policy = policy or OutputPolicy()

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            from atelier.aws import client

            self._s3 = client('s3')
        return self._s3

    @property
    def http(self) -> Any:
        if self._http is None:
            import httpx

            # Redirects are followed by `_get`, one checked hop at a time.
            self._http = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0), follow_redirects=False)
        return self._http

    def copy_from_url(
        self, url: str, key: str, *, content_type: str, provider: str, max_bytes: int | None = None
    ) -> StoredObject:
        """Stream ``provider``'s output ``url`` into ``key``; the same key again overwrites it with the same bytes.

        A ``data:`` URI (a Cog server without ``--upload-url`` returns its files inline) is decoded instead.

        Raises
        ------
        OutputRefused
            The policy refuses the URL or a redirect (host, scheme, address, too many hops).
        OutputUnavailable
            Gone (401/403/404/410), too large (:class:`OutputTooLarge`) or a malformed ``data:`` URI.
        OutputDownloadFailed
            A failure that may pass (5xx, timeout, DNS): the step is retried.
        """
        import httpx

        limit = self.policy.max_bytes if max_bytes is None else max_bytes
        if url[:5].lower() == 'data:':
            if not self.policy.allows_data_uri(provider):
                raise OutputRefused(f'{provider} does not return data: URIs', url[:40])
            content_type, chunks = _data_uri(url, content_type)
            reader = _HashingReader(chunks, limit)
            self.s3.upload_fileobj(reader, self.bucket, key, ExtraArgs={'ContentType': content_type})
            return StoredObject(key=key, content_type=content_type, size=reader.size, sha256=reader.sha256.hexdigest())
        try:
            with self._get(url, provider) as response:
                if response.status_code in {401, 403, 404, 410}:
                    raise OutputUnavailable(f'The provider no longer serves the output ({response.status_code}).')
                if response.status_code >= 400:
                    raise OutputDownloadFailed(f'Fetching the output answered {response.status_code}.')
                declared = response.headers.get('content-length', '')
                if declared.isdigit() and int(declared) > limit:
                    raise OutputTooLarge(f'The output is larger than {limit} bytes.')
                served = response.headers.get('content-type', '').split(';')[0].strip()
                if content_type in {'', 'application/octet-stream'} and served:
                    content_type = served
                reader = _HashingReader(response.iter_bytes(1024 * 1024), limit)
                self.s3.upload_fileobj(reader, self.bucket, key, ExtraArgs={'ContentType': content_type})
        except httpx.HTTPError as exc:
            raise OutputDownloadFailed(f'Fetching the output failed: {exc}') from exc
        return StoredObject(key=key, content_type=content_type, size=reader.size, sha256=reader.sha256.hexdigest())

    @contextmanager
    def _get(self, url: str, provider: str) -> Iterator[Any]:
        """The streamed answer to ``GET url`` after redirects, every hop checked by the policy first."""
        for _hop in range(self.policy.max_redirects + 1):
            try:
                self.policy.check(provider, url)
            except OSError as exc:  # resolving the host for the address check (DNS may come back)
                raise OutputDownloadFailed(f'Resolving the output host failed: {exc}') from exc
            response = self.http.send(self.http.build_request('GET', url), stream=True, follow_redirects=False)
            if response.is_redirect:
                response.close()
                url = urljoin(url, response.headers['location'])
                continue
            try:
                yield response
            finally:
                response.close()
            return
        raise OutputRefused(f'more than {self.policy.max_redirects} redirects', url)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get('Error', {}).get('Code') in {'404', 'NoSuchKey', 'NotFound'}:
                return False
            raise
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object whose key starts with ``prefix`` (end it with ``/``); how many there were.

        ListObjectsV2 a page at a time, each page deleted with one DeleteObjects (at most 1,000 keys). The bucket
        keeps no versions, so a deleted object is gone. Running it again deletes what appeared since (nothing).

        Raises
        ------
        MediaDeletionFailed
            S3 refused some keys (they are named in the message); the objects it did delete stay deleted.
        """
        deleted = 0
        for page in self.s3.get_paginator('list_objects_v2').paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{'Key': item['Key']} for item in page.get('Contents', [])]
            if not keys:
                continue
            response = self.s3.delete_objects(Bucket=self.bucket, Delete={'Objects': keys, 'Quiet': True})
            errors = response.get('Errors') or []
            if errors:
                named = ', '.join(f'{e.get("Key")}: {e.get("Code")}' for e in errors[:5])
                raise MediaDeletionFailed(f'S3 did not delete {len(errors)} object(s) under {prefix} ({named}).')
            deleted += len(keys)
        return deleted

    def presigned_get(self, key: str, *, expires_in: int = 3600) -> str:
        return str(
            self.s3.generate_presigned_url(
                'get_object', Params={'Bucket': self.bucket, 'Key': key}, ExpiresIn=expires_in
            )
        )

    def presigned_upload(self, key: str, *, content_type: str, size: int, expires_in: int = 900) -> dict[str, Any]:
        """A presigned POST that accepts exactly one object of ``content_type`` and at most ``size`` bytes."""
        post: dict[str, Any] = self.s3.generate_presigned_post(
            Bucket=self.bucket,
            Key=key,
            Fields={'Content-Type': content_type},
            Conditions=[{'Content-Type': content_type}, ['content-length-range', 1, size]],
            ExpiresIn=expires_in,
        )
        return post
