"""The API's HTTP conventions, in one place.

Every API function builds its resolver with :func:`create_resolver` and answers through
:func:`resolve`. Together they guarantee the contract of ``ARCHITECTURE.md``: JSON everywhere,
errors as ``{"error": {"code", "message", "request_id"}}`` with the right status, and never a 500
for bad input. Domain errors are mapped to statuses here and nowhere else.
"""

from __future__ import annotations

import base64
import binascii
from http import HTTPStatus
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.depends import (
    DependencyResolutionError,
    build_dependency_tree,
    solve_dependencies,
)
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from atelier.errors import DomainError, ErrorKind
from atelier.observability import logger

MAX_BODY_BYTES = 1024 * 1024

STATUS_BY_KIND: dict[ErrorKind, HTTPStatus] = {
    ErrorKind.BAD_REQUEST: HTTPStatus.BAD_REQUEST,
    ErrorKind.UNAUTHORIZED: HTTPStatus.UNAUTHORIZED,
    ErrorKind.PAYMENT_REQUIRED: HTTPStatus.PAYMENT_REQUIRED,
    ErrorKind.FORBIDDEN: HTTPStatus.FORBIDDEN,
    ErrorKind.NOT_FOUND: HTTPStatus.NOT_FOUND,
    ErrorKind.CONFLICT: HTTPStatus.CONFLICT,
    ErrorKind.INVALID: HTTPStatus.UNPROCESSABLE_ENTITY,
    ErrorKind.RATE_LIMITED: HTTPStatus.TOO_MANY_REQUESTS,
    ErrorKind.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
}


def error_body(code: str, message: str, request_id: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {'code': code, 'message': message, 'request_id': request_id}
    if details:
        error['details'] = details
    return {'error': error}


def error_response(
    status: int, code: str, message: str, request_id: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(
        status_code=int(status),
        content_type=content_types.APPLICATION_JSON,
        body=error_body(code, message, request_id, details),
        headers=headers,
    )


def _request_id(event: dict[str, Any]) -> str:
    return str((event.get('requestContext') or {}).get('requestId') or 'unknown')


def create_resolver() -> APIGatewayHttpResolver:
    """An HTTP API (payload 2.0) resolver with validation and Atelier's error envelope."""
    # A response that breaks its own model is our bug: a logged 500 (``_unexpected``), never a 422 for the client.
    app = APIGatewayHttpResolver(enable_validation=True, response_validation_error_http_code=500)

    def request_id() -> str:
        return _request_id(app.current_event.raw_event)

    @app.exception_handler(DomainError)  # type: ignore[untyped-decorator]
    def _domain_error(exc: DomainError) -> Response[Any]:
        retry_after = exc.details.get('retry_after_seconds') if exc.details else None
        headers = {'Retry-After': str(retry_after)} if isinstance(retry_after, int) else None
        return error_response(
            STATUS_BY_KIND[exc.kind], exc.code, exc.message, request_id(), exc.details or None, headers
        )

    def _authentication_refused() -> Response[Any] | None:
        """The answer of the route's authentication, if it refuses (None when it accepts, or there is none).

        Powertools validates the request before it resolves ``Depends``; a request that is both unauthenticated and
        invalid must still be told 401, so a validation error runs the route's dependencies first."""
        route = app.context.get('_route')
        if route is None or not route.has_dependencies:
            return None
        try:
            solve_dependencies(
                dependant=build_dependency_tree(route.func),
                request=app.request,
                dependency_overrides=app.dependency_overrides or None,
            )
        except DependencyResolutionError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
            refused: Response[Any] = _domain_error(cause) if isinstance(cause, DomainError) else _unexpected(cause)
            return refused
        return None

    def _objects_only(app: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
        """Refuse a JSON array where the route takes an object: Powertools' validation takes an array's first item
        as the body (its rule for repeated query parameters), so ``[{...}]`` would pass as ``{...}``."""
        route = app.context.get('_route')
        if (
            route is not None
            and route.body_field is not None
            and raw_body(app.current_event.raw_event).lstrip()[:1] == b'['
        ):
            raise RequestValidationError(
                [{'loc': ('body',), 'type': 'model_type', 'msg': 'The body must be a JSON object'}]
            )
        return next_middleware(app)

    app.use(middlewares=[_objects_only])

    @app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
    def _validation_error(exc: RequestValidationError) -> Response[Any]:
        refused = _authentication_refused()
        if refused is not None:
            return refused
        errors = list(exc.errors())
        if any(e.get('type') == 'json_invalid' for e in errors):
            return error_response(HTTPStatus.BAD_REQUEST, 'malformed_json', 'The body is not valid JSON.', request_id())
        details = [
            {'loc': [str(part) for part in e.get('loc', ())], 'type': e.get('type'), 'message': e.get('msg')}
            for e in errors
        ]
        return error_response(
            HTTPStatus.UNPROCESSABLE_ENTITY, 'validation_error', 'The request is not valid.', request_id(), details
        )

    @app.not_found
    def _not_found(_: NotFoundError) -> Response[Any]:
        return error_response(HTTPStatus.NOT_FOUND, 'route_not_found', 'No such route.', request_id())

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def _unexpected(exc: Exception) -> Response[Any]:
        logger.exception('unhandled error')
        return error_response(
            HTTPStatus.INTERNAL_SERVER_ERROR, 'internal_error', 'Something went wrong on our side.', request_id()
        )

    return app


def resolve(app: APIGatewayHttpResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Check what the resolver cannot (body size, content type), then let ``app`` answer."""
    rejection = _reject_body(event)
    if rejection is not None:
        return rejection
    return app.resolve(_json_content_type(event), context)


def _json_content_type(event: dict[str, Any]) -> dict[str, Any]:
    """``event`` with the content type Powertools reads: ``application/json`` when a body was sent (``_reject_body``
    has checked it is JSON, case-insensitively, as media types are), none without a body (a type means nothing
    then; Powertools would refuse any but JSON with a 500)."""
    headers = event.get('headers') or {}
    name = next((k for k in headers if k.lower() == 'content-type'), None)
    if name is None:
        return event
    rest = {k: v for k, v in headers.items() if k != name}
    if event.get('body'):
        rest['content-type'] = 'application/json'
    return {**event, 'headers': rest}


def raw_body(event: dict[str, Any]) -> bytes:
    """The request body exactly as the client sent it (API Gateway may base64 it)."""
    body = event.get('body') or ''
    if event.get('isBase64Encoded'):
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return b''
    return body.encode('utf-8')


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode('utf-8')
    except UnicodeDecodeError:
        return False
    return True


MAX_JSON_DEPTH = 64


def _too_deep(body: bytes) -> bool:
    """Whether the JSON nests deeper than any request needs (Python's parser would hit its recursion limit)."""
    if body.count(b'[') + body.count(b'{') <= MAX_JSON_DEPTH:
        return False  # cannot be that deep: the common case costs two byte counts
    depth, in_string, escaped = 0, False, False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # an unescaped quote ends the string
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def _reject_body(event: dict[str, Any]) -> dict[str, Any] | None:
    body = raw_body(event)
    if not body:
        if event.get('body') and event.get('isBase64Encoded'):  # not base64 after all: never a body we can read
            return _rejection(event, HTTPStatus.BAD_REQUEST, 'malformed_json', 'The body is not valid JSON.')
        return None
    headers = {k.lower(): v for k, v in (event.get('headers') or {}).items()}
    if len(body) > MAX_BODY_BYTES:
        status, code, message = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, 'payload_too_large', 'The body is over 1 MB.'
    elif headers.get('content-type', '').split(';')[0].strip().lower() != 'application/json':
        status, code, message = (
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            'unsupported_media_type',
            'Send the body as application/json.',
        )
    elif not _is_utf8(body):
        # API Gateway base64-encodes bodies that are not text; JSON must be UTF-8 (RFC 8259).
        status, code, message = HTTPStatus.BAD_REQUEST, 'malformed_json', 'The body is not valid JSON.'
    elif _too_deep(body):
        status, code, message = HTTPStatus.BAD_REQUEST, 'malformed_json', 'The body is nested too deeply.'
    else:
        return None
    return _rejection(event, status, code, message)


def _rejection(event: dict[str, Any], status: HTTPStatus, code: str, message: str) -> dict[str, Any]:
    import json

    return {
        'statusCode': int(status),
        'headers': {'Content-Type': content_types.APPLICATION_JSON},
        'body': json.dumps(error_body(code, message, _request_id(event))),
        'isBase64Encoded': False,
    }
