"""Build the API's one OpenAPI document from the resolvers of the template's API functions.

Each API function owns its routes (and so its part of the schema); ``GET /openapi.json`` serves
the merged document, which is generated here at build time and committed at
``layers/core/atelier/api/openapi.json`` (a test fails when it is stale). Run: ``make openapi``.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

from infra.local.template import ROOT, function_specs, mount_code

OPENAPI_PATH = ROOT / 'layers' / 'core' / 'atelier' / 'api' / 'openapi.json'
DESCRIPTION = (
    'Atelier: sign in a device, buy credits, run AI generation tasks. JSON everywhere; errors are '
    '`{"error": {"code", "message", "request_id"}}`. Authenticate with `Authorization: Bearer <access_token>` '
    'from a sign-in (`POST /v1/auth/device`, `POST /v1/auth/oidc`); renew it with its refresh token '
    '(`POST /v1/auth/refresh`). Servers may use `X-API-Key` on the routes that list it, within its scopes.'
)


def build() -> dict[str, Any]:
    from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
    from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBearer

    mount_code()
    security_schemes = {
        'bearer': HTTPBearer(scheme='bearer', bearerFormat='JWT'),
        'apiKey': APIKey(
            **{'in': APIKeyIn.header},
            name='X-API-Key',
            description='A server-side key with scopes (created by ops); accepted where a route lists it.',
        ),
    }
    merge = OpenAPIMerge(
        title='Atelier API',
        version='1.0.0',
        description=DESCRIPTION,
        security_schemes=security_schemes,  # type: ignore[arg-type]
        on_conflict='error',
    )
    for spec in sorted(function_specs().values(), key=lambda s: s.logical_id):
        if not any(path != '$default' for _, path in spec.http_routes):
            continue
        package = '.'.join(spec.code_dir.relative_to(ROOT).parts)
        module = importlib.import_module(f'{package}.{spec.handler.rsplit(".", 1)[0]}')
        schema = json.loads(module.app.get_openapi_json_schema(security_schemes=security_schemes))
        merge.add_schema(_declared_routes_only(schema, spec.http_routes))
    document: dict[str, Any] = json.loads(merge.get_openapi_json_schema())
    return _with_error_envelope(document)


ERROR_SCHEMA = {
    'type': 'object',
    'required': ['error'],
    'properties': {
        'error': {
            'type': 'object',
            'required': ['code', 'message', 'request_id'],
            'properties': {
                'code': {'type': 'string', 'description': 'Stable machine-readable code, e.g. insufficient_credits.'},
                'message': {'type': 'string'},
                'request_id': {'type': 'string'},
                'details': {'description': 'Field errors for validation_error.'},
            },
        }
    },
}


def _with_error_envelope(document: dict[str, Any]) -> dict[str, Any]:
    """Describe the errors the API really returns (Powertools documents its own 422 shape)."""
    schemas = document.setdefault('components', {}).setdefault('schemas', {})
    for name in ('HTTPValidationError', 'ValidationError', 'ResponseValidationError'):
        schemas.pop(name, None)
    schemas['Error'] = ERROR_SCHEMA
    error = {
        'description': 'Error',
        'content': {'application/json': {'schema': {'$ref': '#/components/schemas/Error'}}},
    }
    for operations in document.get('paths', {}).values():
        for operation in operations.values():
            responses = operation.setdefault('responses', {})
            responses.pop('422', None)
            responses['4XX'] = error
    return document


def _declared_routes_only(schema: dict[str, Any], routes: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Keep the operations the template routes to this function (a resolver may know more)."""
    declared = {(method.lower(), path) for method, path in routes}
    schema['paths'] = {
        path: {m: op for m, op in ops.items() if (m, path) in declared}
        for path, ops in schema.get('paths', {}).items()
        if any((m, path) in declared for m in ops)
    }
    return schema


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + '\n'


if __name__ == '__main__':
    OPENAPI_PATH.write_text(render())
    sys.stdout.write(f'wrote {OPENAPI_PATH.relative_to(ROOT)}\n')
