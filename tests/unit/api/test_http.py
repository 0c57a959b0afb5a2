"""The HTTP conventions every API function gets from ``create_resolver`` + ``resolve``."""

import json
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from atelier.api import create_resolver, resolve
from atelier.errors import Conflict, NotFound
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
