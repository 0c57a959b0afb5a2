"""The mock provider server over real HTTP on 127.0.0.1: each model's behaviour, idempotent submit, webhooks."""

from __future__ import annotations

import time

import httpx
import pytest

from atelier.providers.mock.media import PNG_SIGNATURE
from atelier.providers.mock.server import MockProviderServer
from atelier.providers.signing import verify
from tests.unit.providers.conftest import SECRET, WebhookReceiver


def put(server: MockProviderServer, prediction_id: str, model: str, **data: object) -> httpx.Response:
    return httpx.put(
        f'{server.url}/predictions/{prediction_id}', json={'model': model, 'input': {'prompt': 'a fox', **data}}
    )


def final(receiver: WebhookReceiver, prediction_id: str) -> dict[str, object]:
    terminal = {'succeeded', 'failed', 'canceled'}
    return receiver.wait_for(lambda r: r.json['id'] == prediction_id and r.json['status'] in terminal).json  # type: ignore[no-any-return]


def test_start_binds_loopback_and_returns_the_base_url(mock_provider: MockProviderServer) -> None:
    assert mock_provider.url.startswith('http://127.0.0.1:')
    assert httpx.get(f'{mock_provider.url}/health').json() == {'status': 'ok'}


def test_image_succeeds_with_a_real_png_and_a_signed_webhook(
    mock_provider: MockProviderServer, receiver: WebhookReceiver
) -> None:
    # Given a submitted image prediction
    response = put(mock_provider, 'p1', 'image', num_images=2)
    assert response.status_code == 201
    assert response.json()['status'] == 'starting'
    # When it finishes, Then a signed webhook carries its outputs
    body = final(receiver, 'p1')
    hook = next(r for r in receiver.received if r.json['status'] == 'succeeded')
    verify(SECRET, hook.headers, hook.body)
    assert body['status'] == 'succeeded'
    assert body['metrics'] == {'images': 2}
    outputs = body['output']
    assert isinstance(outputs, list) and len(outputs) == 2
    # And the outputs are real PNG files
    image = httpx.get(outputs[0])
    assert image.headers['content-type'] == 'image/png'
    assert image.content.startswith(PNG_SIGNATURE)


def test_submit_is_idempotent_per_prediction_id(mock_provider: MockProviderServer, receiver: WebhookReceiver) -> None:
    first = put(mock_provider, 'p2', 'image')
    second = put(mock_provider, 'p2', 'image')
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()['id'] == 'p2'
    final(receiver, 'p2')
    assert len(mock_provider.predictions) == 1
    assert len([r for r in receiver.received if r.json['status'] == 'succeeded']) == 1


def test_fail_submits_answers_503_that_many_times(mock_provider: MockProviderServer) -> None:
    assert put(mock_provider, 'p3', 'image', fail_submits=2).status_code == 503
    assert put(mock_provider, 'p3', 'image', fail_submits=2).status_code == 503
    assert put(mock_provider, 'p3', 'image', fail_submits=2).status_code == 201


def test_video_reports_progress_and_produces_fewer_seconds(
    mock_provider: MockProviderServer, receiver: WebhookReceiver
) -> None:
    put(mock_provider, 'p4', 'video', duration_seconds=6)
    body = final(receiver, 'p4')
    progress = [r.json['progress'] for r in receiver.received if r.json['status'] == 'processing']
    assert progress == [0.25, 0.5, 0.75]
    assert body['metrics'] == {'video_seconds': 3}
    video = httpx.get(body['output'][0])  # type: ignore[index]
    assert video.headers['content-type'] == 'video/mp4'
    assert video.content[4:8] == b'ftyp'


def test_fail_reports_an_uncharged_provider_error(mock_provider: MockProviderServer, receiver: WebhookReceiver) -> None:
    put(mock_provider, 'p5', 'fail')
    body = final(receiver, 'p5')
    assert body['status'] == 'failed'
    assert body['charged'] is False
    assert 'mock provider error' in str(body['error'])


def test_slow_runs_until_canceled_and_the_cancel_is_charged(
    mock_provider: MockProviderServer, receiver: WebhookReceiver
) -> None:
    put(mock_provider, 'p6', 'slow')
    time.sleep(0.1)
    assert httpx.get(f'{mock_provider.url}/predictions/p6').json()['status'] == 'processing'
    httpx.post(f'{mock_provider.url}/predictions/p6/cancel')
    body = final(receiver, 'p6')
    assert body['status'] == 'canceled'
    assert body['charged'] is True


def test_no_webhook_finishes_silently_and_is_found_by_polling(
    mock_provider: MockProviderServer, receiver: WebhookReceiver
) -> None:
    put(mock_provider, 'p7', 'no-webhook')
    deadline = time.monotonic() + 5
    while httpx.get(f'{mock_provider.url}/predictions/p7').json()['status'] != 'succeeded':
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    assert [r for r in receiver.received if r.json['id'] == 'p7'] == []


def test_webhooks_are_retried_with_the_same_id_until_accepted(
    mock_provider: MockProviderServer, receiver: WebhookReceiver
) -> None:
    receiver.answers = [500, 404]
    put(mock_provider, 'p8', 'image')
    deliveries = []
    deadline = time.monotonic() + 5
    while len(deliveries) < 3 and time.monotonic() < deadline:
        deliveries = [r for r in receiver.received if r.json['id'] == 'p8']
        time.sleep(0.02)
    assert len(deliveries) == 3
    assert len({r.headers['webhook-id'] for r in deliveries}) == 1
    assert [d[2] for d in mock_provider.deliveries if d[0] == 'p8'] == [500, 404, 200]


@pytest.mark.parametrize(
    ('path', 'method', 'status'),
    [
        ('/predictions/unknown', 'GET', 404),
        ('/predictions/unknown/cancel', 'POST', 404),
        ('/files/x/0.png', 'GET', 404),
    ],
)
def test_unknown_things_are_404(mock_provider: MockProviderServer, path: str, method: str, status: int) -> None:
    assert httpx.request(method, mock_provider.url + path).status_code == status


def test_unknown_model_or_missing_prompt_is_422(mock_provider: MockProviderServer) -> None:
    assert httpx.put(f'{mock_provider.url}/predictions/p9', json={'model': 'nope', 'input': {}}).status_code == 422
    assert httpx.put(f'{mock_provider.url}/predictions/p9', json={'model': 'image', 'input': {}}).status_code == 422


def test_stop_ends_running_predictions_quietly(receiver: WebhookReceiver) -> None:
    server = MockProviderServer(webhook_url=receiver.url, webhook_secret=SECRET, time_scale=0.1)
    server.start()
    put(server, 'p10', 'slow')
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2
    assert [r for r in receiver.received if r.json['id'] == 'p10'] == []
