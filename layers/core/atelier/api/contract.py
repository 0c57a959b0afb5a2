"""What each route may answer, for the OpenAPI document: every status, in one vocabulary.

A route lists its statuses with :func:`answers` (``@app.post(..., responses=answers(...))``); ``make openapi``
turns them into the document, and the contract test (``tests/e2e/test_openapi_contract.py``) fuzzes the offline
stack and fails on any status a route answers that it does not list. Errors are the envelope
``{"error": {"code", "message", "request_id"}}`` (the ``Error`` schema, added by ``infra.openapi``).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse

ERROR_SCHEMA_REF = '#/components/schemas/Error'

#: What each error status means on this API (the ``error.code`` tells which case it is).
ERRORS: dict[int, str] = {
    400: 'The body is not valid JSON (malformed_json), or a cursor or header this server never issued.',
    401: 'No valid credentials: a missing, expired or revoked token, a bad API key, or a bad webhook signature.',
    402: 'Not enough credits (insufficient_credits).',
    403: 'The credentials may not do this (insufficient_scope), or the resource belongs to another account.',
    404: 'No such resource (task, upload, pack, plan, identity provider...).',
    409: 'Conflicts with the current state (e.g. idempotency_key_reused, already_subscribed, identity_linked).',
    413: 'The body is over 1 MB (payload_too_large).',
    415: 'The body is not sent as application/json (unsupported_media_type).',
    422: 'The request does not match the schema (validation_error; error.details names each field).',
    429: 'Too many: the plan runs this many tasks at once, or too many sign-ups. Retry after Retry-After seconds.',
    503: 'A dependency is briefly unavailable; nothing was changed, retrying the same request is safe.',
}

#: The statuses every route with a JSON body may answer before it reads the body.
BODY = (400, 413, 415, 422)
#: The statuses of a route that takes a user's bearer token only.
BEARER = (401, 503)
#: The statuses of a route that takes a bearer token or an API key with a scope.
BEARER_OR_KEY = (401, 403, 503)

_RETRY_AFTER = {
    'Retry-After': {'description': 'Seconds to wait before retrying.', 'schema': {'type': 'integer', 'minimum': 0}}
}


def answers(success: dict[int, str], *errors: int | tuple[int, ...], links: dict[str, Any] | None = None) -> Any:
    """The ``responses`` of a route: its success statuses (described; their body is the handler's return type)
    and its error statuses (from :data:`ERRORS`), e.g. ``answers({200: 'The task'}, BEARER, 404)``.

    ``links`` (OpenAPI links) go on every success status, so a generated client or a fuzzer can follow them."""
    responses: dict[int, OpenAPIResponse] = {}
    for status, description in success.items():
        responses[status] = {'description': description}
        if links:
            responses[status]['links'] = links
    for status in sorted({s for group in errors for s in (group if isinstance(group, tuple) else (group,))}):
        error: OpenAPIResponse = {
            'description': ERRORS[status],
            'content': {'application/json': {'schema': {'$ref': ERROR_SCHEMA_REF}}},
        }
        if status in (429, 503):
            error['headers'] = _RETRY_AFTER  # type: ignore[typeddict-item]
        responses[status] = error
    return responses
