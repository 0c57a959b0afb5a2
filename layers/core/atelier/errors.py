"""Domain errors.

Every error the domain raises on purpose is a :class:`DomainError`. It carries a stable machine
``code`` (what clients branch on) and a :class:`ErrorKind` (what went wrong, in HTTP-free terms).
The API layer maps kinds to HTTP statuses in one place (``atelier.api.errors``); the domain never
knows about HTTP.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorKind(StrEnum):
    INVALID = 'invalid'  # the request is well formed but its content is wrong (422)
    BAD_REQUEST = 'bad_request'  # the request itself is malformed (400)
    UNAUTHORIZED = 'unauthorized'  # no or bad credentials (401)
    PAYMENT_REQUIRED = 'payment_required'  # not enough credits (402)
    FORBIDDEN = 'forbidden'  # authenticated, but not allowed (403)
    NOT_FOUND = 'not_found'  # no such thing, or not yours (404)
    CONFLICT = 'conflict'  # clashes with the current state (409)
    RATE_LIMITED = 'rate_limited'  # too many at once (429)
    UNAVAILABLE = 'unavailable'  # a dependency failed; safe to retry (503)


class DomainError(Exception):
    """Base class of every deliberate domain failure."""

    kind: ErrorKind = ErrorKind.INVALID
    code: str = 'invalid_request'

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or {}


class InvalidInput(DomainError):
    kind = ErrorKind.INVALID
    code = 'invalid_input'


class NotFound(DomainError):
    kind = ErrorKind.NOT_FOUND
    code = 'not_found'


class Conflict(DomainError):
    kind = ErrorKind.CONFLICT
    code = 'conflict'


class Unauthorized(DomainError):
    kind = ErrorKind.UNAUTHORIZED
    code = 'unauthorized'


class Forbidden(DomainError):
    kind = ErrorKind.FORBIDDEN
    code = 'forbidden'
