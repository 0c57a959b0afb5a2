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
        'stripeSignature': APIKey(
            **{'in': APIKeyIn.header},
            name='Stripe-Signature',
            description="Stripe's signature of the raw body with the endpoint's signing secret (t=...,v1=...).",
        ),
        'revenueCatAuthorization': APIKey(
            **{'in': APIKeyIn.header},
            name='Authorization',
            description='The Authorization value configured for the webhook in the RevenueCat dashboard.',
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
    return _with_task_inputs(_with_error_envelope(document))


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
    """Describe the errors the API really returns: each route lists its own (``atelier.api.contract.answers``);
    Powertools adds a 422 of its own shape to every route, kept only where the route lists 422 (as ``Error``)."""
    schemas = document.setdefault('components', {}).setdefault('schemas', {})
    for name in ('HTTPValidationError', 'ValidationError', 'ResponseValidationError'):
        schemas.pop(name, None)
    schemas['Error'] = ERROR_SCHEMA
    for operations in document.get('paths', {}).values():
        for operation in operations.values():
            responses = operation.setdefault('responses', {})
            if 'HTTPValidationError' in json.dumps(responses.get('422', {})):
                responses.pop('422')
            responses.pop('500', None)  # Powertools' response validation: our bug, never part of the contract
    return document


TASK_REQUESTS = ('CreateTaskRequest', 'EstimateRequest')


def _with_task_inputs(document: dict[str, Any]) -> dict[str, Any]:
    """Say what the server enforces of a task request: ``model`` is a model of the catalog and ``input`` its family's
    schema. One schema per family (``<Family>Input``), one branch per family (``<Family>Task``), and the request is
    one of the branches, told apart by ``model`` (a discriminator, so generated clients get typed inputs)."""
    from atelier.catalog.models import load_catalog

    schemas = document['components']['schemas']
    families: dict[str, list[str]] = {}
    for spec in load_catalog():
        families.setdefault(spec.family, []).append(spec.id)
    branches, mapping = [], {}
    for family, model_ids in sorted(families.items()):
        input_model = load_catalog().get(model_ids[0]).input_model
        input_name, branch_name = input_model.__name__, input_model.__name__.removesuffix('Input') + 'Task'
        schemas[input_name] = input_model.model_json_schema(ref_template='#/components/schemas/{model}')
        schemas[branch_name] = {
            'type': 'object',
            'title': branch_name,
            'description': f'A task of a {family} model: ' + ', '.join(model_ids) + '.',
            'required': ['model', 'input'],
            'additionalProperties': False,
            'properties': {
                'model': {'type': 'string', 'enum': model_ids},
                'input': {'$ref': f'#/components/schemas/{input_name}'},
            },
        }
        branches.append({'$ref': f'#/components/schemas/{branch_name}'})
        mapping |= dict.fromkeys(model_ids, f'#/components/schemas/{branch_name}')
    for name in TASK_REQUESTS:
        schemas[name] = {
            'title': name,
            'description': schemas[name].get('description', ''),
            'oneOf': branches,
            'discriminator': {'propertyName': 'model', 'mapping': mapping},
        }
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
