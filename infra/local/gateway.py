"""A small API Gateway (HTTP API, payload 2.0) in front of the offline stack.

moto cannot deploy ``AWS::ApiGatewayV2`` resources, so the routes come straight from the
template's ``HttpApi`` events. Each request becomes the event API Gateway would send, the function
is invoked through moto's Lambda API (which runs the handler in-process), and the result is mapped
back the way API Gateway maps it.

Offline only, the gateway also answers ``GET /_local/services`` with the side services' URLs (the fake Stripe,
the fake RevenueCat, ...: ``{"services": {"stripe": "http://127.0.0.1:PORT", ...}}``), so a local tool that
knows only the API's URL (``python -m infra.local trigger --url``) finds them. It is not a template route, so
it does not exist in AWS, and it never shadows one: a path a template route matches goes to that route.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from infra.local.http_service import LOCAL_SERVICES_PATH
from infra.local.stack import OfflineStack

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway HTTP API's own limit
_TEXT_TYPES = ('text/', 'application/json', 'application/xml', 'application/x-www-form-urlencoded')


@dataclass(frozen=True)
class Route:
    method: str  # GET, POST, ... or ANY
    path: str  # /v1/tasks/{id}, /files/{proxy+}, or $default
    function: str  # logical id
    pattern: re.Pattern[str] | None

    @property
    def key(self) -> str:
        return '$default' if self.path == '$default' else f'{self.method} {self.path}'


def _compile(path: str) -> re.Pattern[str] | None:
    if path == '$default':
        return None
    regex = ''
    for part in re.split(r'(\{[^}]+\})', path):
        if part.startswith('{') and part.endswith('+}'):
            regex += f'(?P<{part[1:-2]}>.+)'
        elif part.startswith('{'):
            regex += f'(?P<{part[1:-1]}>[^/]+)'
        else:
            regex += re.escape(part)
    return re.compile(f'^{regex}$')


class Gateway:
    """Serves the stack's HTTP routes on 127.0.0.1."""

    def __init__(self, stack: OfflineStack, *, port: int = 3000, host: str = '127.0.0.1') -> None:
        self.stack = stack
        self.routes = [
            Route(method, path, spec.logical_id, _compile(path))
            for spec in stack.runtime.specs.values()
            for method, path in spec.http_routes
        ]
        # Specific routes first, like API Gateway's greedy-last matching.
        self.routes.sort(key=lambda r: (r.pattern is None, '{' in r.path, -len(r.path)))
        self.local_services: dict[str, str] = {}  # GET /_local/services (set by LocalServer once they run)
        self._server = _Server((host, port), self._handler_class())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f'http://{host}:{port}'

    def start(self) -> Gateway:
        self._thread = threading.Thread(target=self._server.serve_forever, name='gateway', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        fallback = None
        for route in self.routes:
            if route.pattern is None:
                fallback = route
                continue
            found = route.pattern.match(path)
            if found and route.method in (method, 'ANY'):
                return route, found.groupdict()
        return (fallback, {}) if fallback else None

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes, source_ip: str = '127.0.0.1'
    ) -> tuple[int, dict[str, str], bytes]:
        """One request, end to end: route, build the event, invoke, map the response.

        ``source_ip`` is the TCP peer, as API Gateway reports it (any 127.x.y.z address reaches a server on
        127.0.0.1, so a test can play several clients)."""
        if len(body) > MAX_PAYLOAD_BYTES:
            return 413, {'content-type': 'application/json'}, b'{"message":"Request Entity Too Large"}'
        url = urlsplit(raw_path)
        # An HTTP API hands Lambda the path percent-decoded, as rawPath and in pathParameters (live captures:
        # middleapi/standard-server#93, aws/aws-lambda-dotnet#1901), and routes on it: so does the offline gateway.
        path = unquote(url.path, errors='replace')
        matched = self.match(method, path)
        if method == 'GET' and path == LOCAL_SERVICES_PATH and (matched is None or matched[0].pattern is None):
            payload = json.dumps({'services': self.local_services}).encode()
            return 200, {'content-type': 'application/json', 'cache-control': 'no-store'}, payload
        if matched is None:
            return 404, {'content-type': 'application/json'}, b'{"message":"Not Found"}'
        route, path_parameters = matched
        event = self._event(route, method, path, url.query, headers, body, path_parameters, source_ip)
        response = self.stack.client('lambda').invoke(
            FunctionName=self.stack.physical_id(route.function), Payload=json.dumps(event).encode()
        )
        payload = response['Payload'].read()
        if response.get('FunctionError'):
            # What an HTTP API answers when its Lambda integration fails: no response from a function that
            # timed out (503), any other unhandled error (500).
            if b'Task timed out after' in payload:
                return 503, {'content-type': 'application/json'}, b'{"message":"Service Unavailable"}'
            return 500, {'content-type': 'application/json'}, b'{"message":"Internal Server Error"}'
        return _to_http(json.loads(payload or b'null'))

    def _event(
        self,
        route: Route,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        path_parameters: dict[str, str],
        source_ip: str = '127.0.0.1',
    ) -> dict[str, Any]:
        lowered: dict[str, str] = {}
        for key, value in headers.items():
            lowered[key.lower()] = f'{lowered[key.lower()]},{value}' if key.lower() in lowered else value
        query_parameters: dict[str, str] = {}
        for key, value in parse_qsl(query, keep_blank_values=True):
            query_parameters[key] = f'{query_parameters[key]},{value}' if key in query_parameters else value
        content_type = lowered.get('content-type', '')
        is_text = not body or content_type.startswith(_TEXT_TYPES)
        if is_text:
            try:
                body_text = body.decode('utf-8')
            except UnicodeDecodeError:
                is_text = False
        now = time.time()
        event: dict[str, Any] = {
            'version': '2.0',
            'routeKey': route.key,
            'rawPath': path,
            'rawQueryString': query,
            'headers': lowered,
            'requestContext': {
                'accountId': '123456789012',
                'apiId': 'local',
                'domainName': lowered.get('host', '127.0.0.1'),
                'domainPrefix': 'local',
                'http': {
                    'method': method,
                    'path': path,
                    'protocol': 'HTTP/1.1',
                    'sourceIp': source_ip,
                    'userAgent': lowered.get('user-agent', ''),
                },
                'requestId': uuid.uuid4().hex,
                'routeKey': route.key,
                'stage': '$default',
                'time': time.strftime('%d/%b/%Y:%H:%M:%S +0000', time.gmtime(now)),
                'timeEpoch': int(now * 1000),
            },
            'isBase64Encoded': not is_text,
        }
        if 'cookie' in lowered:
            event['cookies'] = [c.strip() for c in lowered['cookie'].split(';')]
        if query_parameters:
            event['queryStringParameters'] = query_parameters
        if path_parameters:
            event['pathParameters'] = path_parameters
        if body:
            event['body'] = body_text if is_text else base64.b64encode(body).decode('ascii')
        return event

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def _serve(self) -> None:
                length = int(self.headers.get('content-length') or 0)
                body = self.rfile.read(length) if length else b''
                status, headers, payload = gateway.handle(
                    self.command, self.path, dict(self.headers.items()), body, self.client_address[0]
                )
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in {'content-length', 'connection'}:
                        self.send_header(key, value)
                self.send_header('content-length', str(len(payload)))
                self.end_headers()
                if self.command != 'HEAD':
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

            def __getattr__(self, name: str) -> Any:
                # Any other method (TRACE, QUERY, ...) reaches the routes too, and so the JSON 405/404 of
                # the $default route, where http.server would answer an HTML 501.
                if name.startswith('do_'):
                    return self._serve
                raise AttributeError(name)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the stack logs invocations
                return

        return Handler


class _Server(ThreadingHTTPServer):
    """A thread per connection and a deep accept queue: a burst of connections waits, it is not reset
    (http.server's default backlog is 5)."""

    daemon_threads = True
    request_queue_size = 1024


def _to_http(result: Any) -> tuple[int, dict[str, str], bytes]:
    """API Gateway's payload-2.0 response mapping."""
    if not (isinstance(result, dict) and 'statusCode' in result):
        # A bare value is taken as a 200 JSON body.
        return 200, {'content-type': 'application/json'}, json.dumps(result).encode()
    headers = {str(k): str(v) for k, v in (result.get('headers') or {}).items()}
    for key, values in (result.get('multiValueHeaders') or {}).items():
        headers[key] = ','.join(str(v) for v in values)
    body = result.get('body') or ''
    payload = base64.b64decode(body) if result.get('isBase64Encoded') else str(body).encode()
    if result.get('cookies'):
        headers['set-cookie'] = '; '.join(result['cookies'])
    return int(result['statusCode']), headers, payload
