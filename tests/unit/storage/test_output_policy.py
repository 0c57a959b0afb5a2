"""The output URL policy: which hosts, schemes, addresses, redirects and sizes settle may fetch.

Hosts resolve through a fake resolver and HTTP goes through ``httpx.MockTransport``: no network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from atelier.storage import MediaStore, OutputPolicy, OutputRefused, OutputTooLarge
from atelier.storage.media import OutputDownloadFailed
from atelier.storage.output_policy import DEFAULT_OUTPUT_HOSTS, host_matches, is_public_address

PUBLIC = '104.18.0.1'
PNG = b'\x89PNG\r\n\x1a\n' + b'p' * 100


def resolver(table: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f'no such host {host}')
        return table[host]

    return resolve


def policy(**table: list[str]) -> OutputPolicy:
    addresses = {'v3.fal.media': [PUBLIC], 'fal.media': [PUBLIC], 'pbxt.replicate.delivery': [PUBLIC]}
    addresses.update({host.replace('_', '.'): ips for host, ips in table.items()})
    return OutputPolicy(
        hosts={**DEFAULT_OUTPUT_HOSTS, 'mock': ('127.0.0.1',), 'cog': ('cog.internal',)},
        local_hosts=frozenset({'127.0.0.1'}),
        max_bytes=1024,
        resolve=resolver(addresses),
    )


class FakeS3:
    """``upload_fileobj`` as boto3 does it for a stream: read until empty; keep what was completed."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def upload_fileobj(self, reader: Any, bucket: str, key: str, ExtraArgs: dict[str, str]) -> None:
        parts = []
        while chunk := reader.read(256):
            parts.append(chunk)
        self.objects[key] = b''.join(parts)


def store(handler: Any, output_policy: OutputPolicy | None = None) -> tuple[MediaStore, FakeS3]:
    s3 = FakeS3()
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return MediaStore('media', s3=s3, http=http, policy=output_policy or policy()), s3


# ------------------------------------------------------------------ hosts and wildcards
@pytest.mark.parametrize(
    ('host', 'pattern', 'matches'),
    [
        ('v3.fal.media', '*.fal.media', True),
        ('a.b.fal.media', '*.fal.media', True),
        ('V3.FAL.MEDIA.', '*.fal.media', True),
        ('fal.media', '*.fal.media', False),  # a wildcard is for subdomains only
        ('evilfal.media', '*.fal.media', False),
        ('fal.media.evil.com', '*.fal.media', False),
        ('fal.media', 'fal.media', True),
        ('v3.fal.media', 'fal.media', False),
    ],
)
def test_host_patterns_match_exactly_or_subdomains_only(host: str, pattern: str, matches: bool) -> None:
    assert host_matches(host, pattern) is matches


@pytest.mark.parametrize(
    ('provider', 'url'),
    [
        ('fal', 'https://v3.fal.media/files/lion/abc.png'),
        ('fal', 'https://fal.media/files/abc.png'),
        ('replicate', 'https://pbxt.replicate.delivery/xyz/out-0.webp'),
        ('mock', 'http://127.0.0.1:8123/files/p1/0.png'),  # explicitly local: plain http allowed
    ],
)
def test_a_providers_own_output_hosts_are_allowed(provider: str, url: str) -> None:
    policy().check(provider, url)


@pytest.mark.parametrize(
    ('provider', 'url', 'reason'),
    [
        ('fal', 'https://pbxt.replicate.delivery/x.png', 'not an output host of fal'),  # another provider's CDN
        ('fal', 'https://files.example.net/x.png', 'not an output host'),
        ('fal', 'http://v3.fal.media/x.png', 'scheme http'),  # https only
        ('fal', 'ftp://v3.fal.media/x.png', 'scheme ftp'),
        ('fal', 'file:///etc/passwd', 'no host'),
        ('fal', 'https://169.254.169.254/latest/meta-data/', 'not an output host'),
        ('replicate', 'http://127.0.0.1:8123/x.png', 'not an output host'),  # local, but not replicate's
        ('openai', 'https://v3.fal.media/x.png', 'not an output host of openai'),  # a provider with no hosts
    ],
)
def test_other_hosts_and_schemes_are_refused(provider: str, url: str, reason: str) -> None:
    with pytest.raises(OutputRefused, match='was refused') as refused:
        policy().check(provider, url)
    assert reason in refused.value.reason and refused.value.url == url
    assert refused.value.code == 'output_refused' and url not in refused.value.message


@pytest.mark.parametrize(
    'address', ['10.0.0.7', '127.0.0.1', '169.254.169.254', 'fd00:ec2::254', '::ffff:169.254.169.254', '::1', '0.0.0.0']
)
def test_an_allowed_host_that_resolves_to_a_private_address_is_refused(address: str) -> None:
    assert not is_public_address(address)
    with pytest.raises(OutputRefused, match='was refused') as refused:
        policy(v3_fal_media=[PUBLIC, address]).check('fal', 'https://v3.fal.media/x.png')
    assert 'non-public address' in refused.value.reason


def test_the_policy_is_configured_from_settings() -> None:
    # Given ops replacing fal's hosts and a Cog server on a private network
    configured = OutputPolicy.configure(
        output_hosts=json.dumps({'fal': ['cdn.example.com', '*.fal.media'], 'cog': ['uploads.example.com']}),
        local_hosts='10.0.0.5, localhost',
        max_bytes=5000,
        base_urls={'mock': '', 'cog': 'http://10.0.0.5:5000'},
    )
    # Then fal has exactly those hosts, Replicate keeps its defaults, Cog adds its server's host
    assert configured.hosts['fal'] == ('cdn.example.com', '*.fal.media')
    assert configured.hosts['replicate'] == DEFAULT_OUTPUT_HOSTS['replicate']
    assert configured.hosts['cog'] == ('uploads.example.com', '10.0.0.5')
    assert 'mock' not in configured.hosts
    assert configured.local_hosts == {'10.0.0.5', 'localhost'} and configured.max_bytes == 5000
    # And nothing configured is the defaults
    assert dict(OutputPolicy.configure().hosts) == DEFAULT_OUTPUT_HOSTS
    with pytest.raises(ValueError, match='JSON object'):
        OutputPolicy.configure(output_hosts='["fal.media"]')


# ------------------------------------------------------------------ fetching: redirects, size, data: URIs
def test_an_allowed_output_is_streamed_into_the_bucket() -> None:
    media, s3 = store(lambda request: httpx.Response(200, content=PNG, headers={'content-type': 'image/png'}))
    stored = media.copy_from_url('https://v3.fal.media/a.png', 'outputs/a/t/0.png', content_type='', provider='fal')
    assert s3.objects['outputs/a/t/0.png'] == PNG
    assert (stored.size, stored.content_type) == (len(PNG), 'image/png')


def test_a_redirect_to_another_allowed_host_is_followed_and_checked() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == 'fal.media':
            return httpx.Response(302, headers={'location': 'https://v3.fal.media/real.png'})
        return httpx.Response(200, content=PNG)

    media, s3 = store(handler)
    media.copy_from_url('https://fal.media/a.png', 'k', content_type='image/png', provider='fal')
    assert seen == ['https://fal.media/a.png', 'https://v3.fal.media/real.png'] and s3.objects['k'] == PNG


@pytest.mark.parametrize(
    'location',
    [
        'http://169.254.169.254/latest/meta-data/iam/',  # the metadata service, plain http
        'https://evil.fal.media/x.png',  # an allowed name whose DNS answers the metadata address
        'https://internal.example.com/x.png',  # a host fal does not serve from
        'http://v3.fal.media/x.png',  # a downgrade to http
    ],
)
def test_a_redirect_to_a_private_or_unlisted_place_is_refused_before_it_is_fetched(location: str) -> None:
    fetched: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        fetched.append(str(request.url))
        return httpx.Response(301, headers={'location': location})

    media, s3 = store(handler, policy(evil_fal_media=['169.254.169.254']))
    with pytest.raises(OutputRefused) as refused:
        media.copy_from_url('https://v3.fal.media/a.png', 'k', content_type='image/png', provider='fal')
    assert refused.value.url == location
    assert fetched == ['https://v3.fal.media/a.png'] and s3.objects == {}


def test_too_many_redirects_are_refused() -> None:
    media, s3 = store(lambda request: httpx.Response(302, headers={'location': f'{request.url}x'}))
    with pytest.raises(OutputRefused) as refused:
        media.copy_from_url('https://v3.fal.media/a', 'k', content_type='image/png', provider='fal')
    assert 'redirects' in refused.value.reason and s3.objects == {}


def test_a_declared_size_over_the_cap_is_refused_before_reading() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={'content-length': '5000'}, stream=httpx.ByteStream(b''))

    media, s3 = store(handler)
    with pytest.raises(OutputTooLarge):
        media.copy_from_url('https://v3.fal.media/a.mp4', 'k', content_type='video/mp4', provider='fal')
    assert s3.objects == {}


def test_an_undeclared_size_over_the_cap_is_stopped_mid_stream() -> None:
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for n in range(100):  # 6.4 MB, read a MiB at a time
            sent.append(n)
            yield b'v' * 64 * 1024

    media, s3 = store(lambda request: httpx.Response(200, content=chunks()))
    with pytest.raises(OutputTooLarge, match='1024 bytes') as too_large:
        media.copy_from_url('https://v3.fal.media/a.mp4', 'k', content_type='video/mp4', provider='fal')
    assert too_large.value.code == 'output_too_large'
    assert len(sent) <= 20 and s3.objects == {}  # abandoned after the first MiB read, nothing stored


def test_a_host_that_does_not_resolve_is_a_failure_that_may_pass() -> None:
    media, _ = store(lambda request: httpx.Response(200, content=PNG))
    with pytest.raises(OutputDownloadFailed):
        media.copy_from_url('https://v9.fal.media/a.png', 'k', content_type='image/png', provider='fal')


def test_data_uris_are_decoded_for_cog_only() -> None:
    media, s3 = store(lambda request: pytest.fail('a data: URI is never fetched'))
    media.copy_from_url('data:image/png;base64,aGVsbG8=', 'k', content_type='', provider='cog')
    assert s3.objects['k'] == b'hello'
    with pytest.raises(OutputRefused):
        media.copy_from_url('data:image/png;base64,aGVsbG8=', 'k2', content_type='', provider='fal')
    with pytest.raises(OutputTooLarge):
        media.copy_from_url('data:text/plain,' + 'x' * 2000, 'k3', content_type='', provider='cog')
    assert set(s3.objects) == {'k'}
