"""The HTTP conventions every API function gets from ``create_resolver`` + ``resolve``."""

import json
from typing import Annotated, Any

import pytest
from aws_lambda_powertools.event_handler import Depends
from aws_lambda_powertools.event_handler.request import Request
from pydantic import BaseModel, ConfigDict, Field

from atelier.api import create_resolver, resolve
from atelier.errors import Conflict, NotFound, Unauthorized
from tests.utils import http_event

app = create_resolver()


class Thing(BaseModel):
    model_config = ConfigDict(extra='forbid')
    name: str = Field(min_length=1)


@app.post('/things')
def create_thing(thing: Thing) -> dict[str, Any]:
    if thing.name == 'taken':
        raise Conflict('That name is taken.', code='name_taken')
    if thing.name == 'ghost':
        raise NotFound('No such ghost.')
    if thing.name == 'bug':
        raise RuntimeError('a bug, not bad input')
    return {'name': thing.name}


def signed_in(request: Request) -> str:
    if request.headers.get('authorization') != 'Bearer good':
        raise Unauthorized('Send a good token.', code='missing_token')
    return 'acct_1'


@app.post('/private/things')
def create_private_thing(account_id: Annotated[str, Depends(signed_in)], thing: Thing) -> dict[str, Any]:
    return {'account_id': account_id, 'name': thing.name}


def call(body: str | bytes | None, content_type: str | None = 'application/json') -> tuple[int, dict[str, Any]]:
    headers = {'content-type': content_type} if content_type else {}
    response = resolve(app, http_event('POST', '/things', body=body, headers=headers), None)
    return response['statusCode'], json.loads(response['body'])


def test_a_valid_request_is_answered():
    assert call('{"name": "lamp"}') == (200, {'name': 'lamp'})


@pytest.mark.parametrize(
    ('body', 'content_type', 'status', 'code'),
    [
        ('{"name": ', 'application/json', 400, 'malformed_json'),
        ('{"name": "lamp"}', 'text/plain', 415, 'unsupported_media_type'),
        ('{"name": "lamp"}', None, 415, 'unsupported_media_type'),
        ('{}', 'application/json', 422, 'validation_error'),
        ('{"name": "lamp", "colour": "red"}', 'application/json', 422, 'validation_error'),
        ('x' * (1024 * 1024 + 1), 'application/json', 413, 'payload_too_large'),
        ('{"name": "taken"}', 'application/json', 409, 'name_taken'),
        ('{"name": "ghost"}', 'application/json', 404, 'not_found'),
        ('{"name": "bug"}', 'application/json', 500, 'internal_error'),
        ('{"name": ' + '[' * 5000 + ']' * 5000 + '}', 'application/json', 400, 'malformed_json'),
    ],
)
def test_every_failure_is_a_json_error_envelope(body: str, content_type: str | None, status: int, code: str):
    # When a request fails for any reason
    got_status, got_body = call(body, content_type)
    # Then the status is the right one and the body is the error envelope with the request id
    assert got_status == status
    assert got_body['error']['code'] == code
    assert got_body['error']['request_id'] == 'req-test'
    assert got_body['error']['message']


def test_a_json_body_that_is_not_utf8_is_malformed():
    # Given bytes that are not UTF-8, labelled as JSON (API Gateway base64-encodes such a body)
    event = http_event(
        'POST', '/things', body=b'{"name": "\xb4"}', headers={'content-type': 'application/json'}, base64_body=True
    )
    response = resolve(app, event, None)
    assert response['statusCode'] == 400
    assert json.loads(response['body'])['error']['code'] == 'malformed_json'


def test_nesting_inside_strings_does_not_count_as_depth():
    # Brackets inside a string (with escaped quotes) are text, not structure
    assert call(json.dumps({'name': '[{' * 200 + '\\"' + '[' * 100}))[0] == 200


def test_validation_errors_say_where():
    status, body = call('{"name": "lamp", "colour": "red"}')
    assert status == 422
    assert any(detail['loc'][-1] == 'colour' for detail in body['error']['details'])


def test_an_unknown_route_is_a_json_404():
    response = resolve(app, http_event('GET', '/nothing-here'), None)
    assert response['statusCode'] == 404
    assert json.loads(response['body'])['error']['code'] == 'route_not_found'


@pytest.mark.parametrize('body', ['{}', '{"name": 3}', '[{"name": "lamp"}]'])
def test_authentication_is_answered_before_the_body_is_judged(body: str):
    # Given a request without credentials whose body is invalid
    event = http_event('POST', '/private/things', body=body, headers={'content-type': 'application/json'})
    response = resolve(app, event, None)
    # Then it is told 401 (who it is matters first), not 422
    assert response['statusCode'] == 401
    assert json.loads(response['body'])['error']['code'] == 'missing_token'


def test_a_json_array_is_not_taken_as_its_first_item():
    # Powertools would validate [{...}] as {...}; the API takes objects only
    headers = {'content-type': 'application/json', 'authorization': 'Bearer good'}
    event = http_event('POST', '/private/things', body='[{"name": "lamp"}]', headers=headers)
    response = resolve(app, event, None)
    assert response['statusCode'] == 422
    assert json.loads(response['body'])['error']['code'] == 'validation_error'
    good = http_event('POST', '/private/things', body='{"name": "lamp"}', headers=headers)
    assert json.loads(resolve(app, good, None)['body']) == {'account_id': 'acct_1', 'name': 'lamp'}


def test_a_base64_body_that_is_not_base64_is_malformed():
    event = http_event('POST', '/things', headers={'content-type': 'application/json'})
    event.update(body='%%% not base64 %%%', isBase64Encoded=True)
    response = resolve(app, event, None)
    assert response['statusCode'] == 400
    assert json.loads(response['body'])['error']['code'] == 'malformed_json'


def test_the_json_media_type_is_case_insensitive():
    assert call('{"name": "lamp"}', 'Application/JSON; charset=UTF-8') == (200, {'name': 'lamp'})


@pytest.mark.parametrize('content_type', ['text/plain', 'application/xml', 'multipart/form-data'])
def test_a_content_type_without_a_body_is_not_a_server_error(content_type: str):
    # Given no body, whatever type is named: the body is missing (422), never a 500
    status, body = call(None, content_type)
    assert (status, body['error']['code']) == (422, 'validation_error')
    # and on a route with authentication, no credentials is told first
    event = http_event('POST', '/private/things', headers={'content-type': content_type})
    assert resolve(app, event, None)['statusCode'] == 401


class Broken(BaseModel):
    count: int


@app.get('/broken')
def broken() -> Broken:
    return {'count': 'not a number'}  # type: ignore[return-value]


def test_a_response_that_breaks_its_model_is_our_500_not_a_422():
    response = resolve(app, http_event('GET', '/broken'), None)
    assert response['statusCode'] == 500
    assert json.loads(response['body'])['error']['code'] == 'internal_error'


def test_a_failing_authentication_dependency_is_an_enveloped_500():
    def unreachable(request: Request) -> str:
        raise ConnectionError('the key store is down')

    app.dependency_overrides[signed_in] = unreachable
    try:
        event = http_event('POST', '/private/things', body='{}', headers={'content-type': 'application/json'})
        response = resolve(app, event, None)
    finally:
        app.dependency_overrides.clear()
    assert response['statusCode'] == 500
    assert json.loads(response['body'])['error']['code'] == 'internal_error'
