"""The committed OpenAPI document keeps the conventions a generated client relies on (``atelier.api.contract``).

Whether the server answers as documented is the contract test's (``tests/e2e/test_openapi_contract.py``); these
checks read the document alone, so a route that forgets a convention fails in the unit suite already."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra.openapi import OPENAPI_PATH

DOCUMENT: dict[str, Any] = json.loads(OPENAPI_PATH.read_text())
OPERATIONS = [
    pytest.param(operation, id=f'{method.upper()} {path}')
    for path, operations in DOCUMENT['paths'].items()
    for method, operation in operations.items()
]


def test_operation_ids_are_unique():
    ids = [param.values[0]['operationId'] for param in OPERATIONS]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize('operation', OPERATIONS)
def test_every_operation_is_named_tagged_and_lists_its_statuses(operation: dict[str, Any]):
    assert re.fullmatch(r'[a-z]+(?:[A-Z][a-z]*)*', operation['operationId']), 'camelCase, as a client method'
    assert operation.get('tags') and operation.get('summary')
    statuses = set(operation['responses'])
    assert statuses and not {'default', '4XX', '5XX'} & statuses, 'each status listed, no ranges'
    assert any(status.startswith('2') for status in statuses)
    if operation.get('security'):
        assert '401' in statuses
    if 'requestBody' in operation:
        assert {'400', '413', '415', '422'} <= statuses
    for status, response in operation['responses'].items():
        if int(status) >= 400:
            schema = response['content']['application/json']['schema']
            assert schema == {'$ref': '#/components/schemas/Error'}, f'{status} is the error envelope'


def test_a_task_request_is_one_branch_per_model_family_told_apart_by_model():
    from atelier.catalog.models import load_catalog

    schemas = DOCUMENT['components']['schemas']
    for name in ('CreateTaskRequest', 'EstimateRequest'):
        mapping = schemas[name]['discriminator']['mapping']
        assert set(mapping) == {model.id for model in load_catalog()}
        for model in load_catalog():
            branch = schemas[mapping[model.id].rsplit('/', 1)[1]]
            assert model.id in branch['properties']['model']['enum']
            assert branch['properties']['input'] == {'$ref': f'#/components/schemas/{model.input_model.__name__}'}


def test_powertools_own_validation_error_shape_is_not_documented():
    assert not {'HTTPValidationError', 'ValidationError'} & set(DOCUMENT['components']['schemas'])
