"""Errors of the task domain (mapped to HTTP statuses by their kind, in ``atelier.api.http``)."""

from __future__ import annotations

from atelier.errors import Conflict, DomainError, ErrorKind, Forbidden, NotFound


class TaskNotFound(NotFound):
    """No such task, or another account's (the two are indistinguishable on purpose)."""

    code = 'task_not_found'


class TaskFinished(Conflict):
    code = 'task_finished'


class IdempotencyKeyReused(Conflict):
    """The Idempotency-Key was used before with another request body."""

    code = 'idempotency_key_reused'


class InvalidIdempotencyKey(DomainError):
    kind = ErrorKind.BAD_REQUEST
    code = 'invalid_idempotency_key'


class ForeignUpload(Forbidden):
    """The input references an upload that belongs to another account."""

    code = 'foreign_upload'


class UploadNotFound(NotFound):
    """The input references an upload key that was never uploaded (404, like any id that names nothing)."""

    code = 'upload_not_found'
