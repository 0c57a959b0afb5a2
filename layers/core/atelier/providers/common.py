"""Small pieces the HTTP provider adapters share: secrets fetched on first use, outputs and their types."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from atelier.providers.base import MalformedWebhook

if TYPE_CHECKING:
    from atelier.catalog import ModelSpec

#: A secret's value, or how to fetch it (so that a function that never calls the provider never reads it).
SecretSource = str | Callable[[], str]

_CONTENT_TYPES = {
    'png': 'image/png',
    'jpg': 'image/jpeg',
    'jpeg': 'image/jpeg',
    'webp': 'image/webp',
    'gif': 'image/gif',
    'mp4': 'video/mp4',
    'webm': 'video/webm',
    'mov': 'video/quicktime',
    'mp3': 'audio/mpeg',
    'wav': 'audio/wav',
}
_DATA_URI = re.compile(r'^data:([\w.+-]+/[\w.+-]+)?[;,]', re.IGNORECASE)


def signed_prediction(body: bytes) -> dict[str, Any]:
    """The prediction a verified webhook carries: a JSON object with a string ``id``, else :class:`MalformedWebhook`."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise MalformedWebhook('The webhook body is not JSON.') from None
    if not isinstance(payload, dict) or not isinstance(payload.get('id'), str) or not payload['id']:
        raise MalformedWebhook('The webhook does not carry a prediction.')
    return payload


class LazySecret:
    """A secret resolved once, on first use."""

    def __init__(self, source: SecretSource) -> None:
        self._source = source
        self._value: str | None = source if isinstance(source, str) else None

    def __call__(self) -> str:
        if self._value is None:
            assert not isinstance(self._source, str)
            self._value = self._source()
        return self._value


def content_type_for(url: str) -> str:
    """The media type of an output: from a ``data:`` URI's header, else from the URL's file extension."""
    if url[:5].lower() == 'data:':
        match = _DATA_URI.match(url)
        return match.group(1).lower() if match and match.group(1) else 'application/octet-stream'
    path = urlsplit(url).path
    extension = path.rsplit('.', 1)[-1].lower() if '.' in path.rsplit('/', 1)[-1] else ''
    return _CONTENT_TYPES.get(extension, 'application/octet-stream')


def output_urls(value: Any) -> list[str]:
    """The file outputs of a Cog/Replicate prediction: a URL or data URI, or a list of them (other values: none)."""
    items = value if isinstance(value, list) else [value]
    return [
        item
        for item in items
        if isinstance(item, str) and (item.startswith(('https://', 'http://')) or item[:5].lower() == 'data:')
    ]


def metric_seconds(payload: Any, name: str = 'predict_time') -> float | None:
    """A ``metrics`` value in seconds, if the provider reported one."""
    metrics = payload.get('metrics') if isinstance(payload, dict) else None
    value = metrics.get(name) if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, int | float) and value >= 0 else None


def delivered_credits(model: ModelSpec, data: dict[str, Any], delivered: int) -> int:
    """The credits for what a job delivered: an image model's outputs returned (at most those asked for; a
    safety filter may drop some), any other model's price for its input."""
    if model.kind != 'image':
        return model.actual_cost(data)
    requested = model.input_model.model_construct(**data).image_count()
    return model.actual_cost(data, images=min(delivered, requested) if requested else delivered)
