"""The API's contract over real HTTP on the offline stack: health, docs, and errors for bad input."""

import pytest
from openapi_spec_validator import validate

from tests.e2e.conftest import Stack


def test_health_needs_no_auth(stack: Stack):
    response = stack.http.get('/health')
    assert response.status_code == 200
    assert response.json() == {'status': 'ok'}


def test_openapi_document_is_valid_openapi_3_with_the_contract_routes(stack: Stack):
    response = stack.http.get('/openapi.json')
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document['openapi'].startswith('3.')
    assert {'/health', '/v1/auth/device', '/v1/me'} <= set(document['paths'])


def test_swagger_ui_is_served_without_a_cdn(stack: Stack):
    response = stack.http.get('/docs')
    assert response.status_code == 200
    assert response.headers['content-type'].startswith('text/html')
    assert 'SwaggerUIBundle' in response.text
    assert '/v1/auth/device' in response.text


@pytest.mark.parametrize(
    ('method', 'path', 'status', 'code'),
    [
        ('GET', '/nowhere', 404, 'route_not_found'),
        ('DELETE', '/v1/me/nothing', 404, 'route_not_found'),
        ('PATCH', '/v1/me', 405, 'method_not_allowed'),
        ('GET', '/v1/auth/device', 405, 'method_not_allowed'),
        ('PUT', '/health', 405, 'method_not_allowed'),
    ],
)
def test_unknown_routes_and_methods_are_json_errors(stack: Stack, method: str, path: str, status: int, code: str):
    response = stack.http.request(method, path)
    assert response.status_code == status
    assert response.json()['error']['code'] == code
    assert response.json()['error']['request_id']


@pytest.mark.parametrize(
    ('content', 'content_type', 'status', 'code'),
    [
        (b'{"device_id": ', 'application/json', 400, 'malformed_json'),
        (b'device_id=abcdefghijklmnopq', 'application/x-www-form-urlencoded', 415, 'unsupported_media_type'),
        (b'{}', 'application/json', 422, 'validation_error'),
        (b'{"device_id": "abcdefghijklmnopq", "admin": true}', 'application/json', 422, 'validation_error'),
        (b'{"device_id": "too-short"}', 'application/json', 422, 'validation_error'),
        (b'{"device_id": "' + b'x' * 129 + b'"}', 'application/json', 422, 'validation_error'),
        (b'{"device_id": 1234567890123456}', 'application/json', 422, 'validation_error'),
        (b'[' + b'"x",' * 300_000 + b'"x"]', 'application/json', 413, 'payload_too_large'),
    ],
)
def test_bad_sign_in_bodies_get_clear_errors_and_create_nothing(
    stack: Stack, content: bytes, content_type: str, status: int, code: str
):
    # Given the number of accounts before
    table = stack.physical_id('LedgerTable')
    before = stack.client('dynamodb').scan(TableName=table, Select='COUNT')['Count']
    # When a malformed sign-in is sent
    response = stack.http.post('/v1/auth/device', content=content, headers={'content-type': content_type})
    # Then it gets the right JSON error and nothing was written
    assert response.status_code == status
    assert response.json()['error']['code'] == code
    assert stack.client('dynamodb').scan(TableName=table, Select='COUNT')['Count'] == before


def test_paths_arrive_percent_decoded_as_an_http_api_passes_them(stack: Stack) -> None:
    # Given a task id sent percent-encoded (%5F is "_"), and one that encodes a "/"
    user = stack.sign_in()
    encoded = user.get('/v1/tasks/tsk%5Fnothing-here')
    slash = user.get('/v1/tasks/tsk%2Fnothing')
    # Then the first reaches getTask decoded (no such task), the second is a path no route matches
    assert (encoded.status_code, encoded.json()['error']['code']) == (404, 'task_not_found')
    assert slash.status_code == 404 and slash.json()['error']['code'] != 'task_not_found'
