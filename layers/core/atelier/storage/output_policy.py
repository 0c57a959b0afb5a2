"""Where a provider's outputs may be fetched from.

An output URL comes from a provider's answer or webhook, so it is untrusted input that makes this
service send a request: without a policy a compromised or misbehaving provider (or a forged webhook
that got through) could make settle fetch the cloud's metadata service, a private address or a huge
file. The policy:

- **hosts per provider**: fal serves outputs from its CDN (``fal.media``, ``v3.fal.media``...), Replicate
  from ``replicate.delivery`` (``pbxt.replicate.delivery``...); the mock and Cog from their configured
  base URL's host (plus any host ops list, e.g. a Cog ``--upload-url`` target). ``*.example.com`` matches
  subdomains only, never ``example.com`` itself nor ``badexample.com``. A RunPod worker is the team's own
  code and puts its outputs where the team says (its S3 bucket, a CDN): RunPod serves none, so ``runpod``
  has no host until ops list them (``OutputHosts``), and until then every RunPod output is refused;
- **https only**, except plain http to a host explicitly listed as *local* (127.0.0.1/localhost offline);
- **public addresses only**: each hop's host is resolved and every address must be global (no private,
  loopback, link-local, metadata - 169.254.169.254, fd00:ec2::254 - or multicast address), unless the
  host is listed as local;
- **redirects** followed by the caller one hop at a time (at most :data:`MAX_REDIRECTS`), each hop checked
  like the first;
- ``data:`` URIs only from providers that really return them (Cog without ``--upload-url``), decoded in
  process, never fetched;
- a **size cap**, checked on ``Content-Length`` and again on the bytes as they stream.

The address check resolves the name once and the HTTP client resolves it again to connect: a host whose
DNS answers a public address to the check and a private one to the connection (DNS rebinding) slips
through. The allowed hosts are the providers' own CDNs, whose DNS the providers control, so the
remaining risk is theirs being compromised; pinning the connection to the checked address would close it.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from atelier.errors import DomainError, ErrorKind

#: Output hosts per provider when ``OUTPUT_HOSTS`` names none (the template parameter's default, too).
DEFAULT_OUTPUT_HOSTS: dict[str, tuple[str, ...]] = {
    'fal': ('fal.media', '*.fal.media'),
    'replicate': ('replicate.delivery', '*.replicate.delivery'),
    'runpod': (),  # the team's own worker: its output hosts are whatever ops list in OutputHosts
}
#: 200 MiB: the catalog's longest outputs are 10 s 1080p videos, tens of MB.
DEFAULT_MAX_OUTPUT_BYTES = 200 * 1024**2
MAX_REDIRECTS = 3
#: Providers that return outputs inline as ``data:`` URIs (a Cog server run without ``--upload-url``).
DATA_URI_PROVIDERS = frozenset({'cog'})
#: Providers whose configured base URL's host also serves their outputs.
BASE_URL_PROVIDERS = ('mock', 'cog')
_METADATA = frozenset({ipaddress.ip_address('169.254.169.254'), ipaddress.ip_address('fd00:ec2::254')})

Resolver = Callable[[str, int], Iterable[str]]


class OutputRefused(DomainError):
    """The output's URL breaks the policy: the task fails for good, refunded. The user sees a short stable
    message; ``url`` and ``reason`` are for the logs."""

    kind = ErrorKind.INVALID
    code = 'output_refused'

    def __init__(self, reason: str, url: str) -> None:
        super().__init__("The provider's output was refused: it does not come from where that provider serves them.")
        self.reason = reason
        self.url = url


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (what the HTTP client may connect to)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def is_public_address(address: str) -> bool:
    """Whether ``address`` is a global unicast address (IPv4-mapped IPv6 judged as the IPv4 it carries)."""
    ip = ipaddress.ip_address(address.split('%', 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast and ip not in _METADATA


def host_matches(host: str, pattern: str) -> bool:
    """``pattern`` is a host name (exact) or ``*.domain`` (any subdomain of ``domain``, not ``domain`` itself)."""
    host, pattern = _normal(host), _normal(pattern)
    if pattern.startswith('*.'):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _normal(host: str) -> str:
    return host.strip().rstrip('.').lower()


@dataclass(frozen=True)
class OutputPolicy:
    """Which output URLs may be fetched, per provider (see the module's docstring)."""

    hosts: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_OUTPUT_HOSTS))
    local_hosts: frozenset[str] = frozenset()
    max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_redirects: int = MAX_REDIRECTS
    data_uri_providers: frozenset[str] = DATA_URI_PROVIDERS
    resolve: Resolver = resolve_host

    @classmethod
    def configure(
        cls,
        *,
        output_hosts: str = '',
        local_hosts: str = '',
        max_bytes: int = DEFAULT_MAX_OUTPUT_BYTES,
        base_urls: Mapping[str, str] | None = None,
    ) -> OutputPolicy:
        """The policy from settings.

        ``output_hosts`` is a JSON object ``{"provider": ["host", "*.domain"]}``; a provider it names gets exactly
        those hosts, the others keep :data:`DEFAULT_OUTPUT_HOSTS` (empty = all defaults). ``local_hosts`` is
        comma-separated. ``base_urls`` are the mock's and Cog's configured URLs, whose hosts are added for them.
        """
        hosts: dict[str, tuple[str, ...]] = dict(DEFAULT_OUTPUT_HOSTS)
        if output_hosts.strip():
            parsed = json.loads(output_hosts)
            if not isinstance(parsed, dict) or not all(
                isinstance(v, list) and all(isinstance(h, str) for h in v) for v in parsed.values()
            ):
                raise ValueError('OUTPUT_HOSTS must be a JSON object of provider -> list of host names.')
            hosts.update({str(name): tuple(_normal(h) for h in value if h.strip()) for name, value in parsed.items()})
        for provider, url in (base_urls or {}).items():
            host = urlsplit(url).hostname if url else None
            if provider in BASE_URL_PROVIDERS and host:
                hosts[provider] = (*hosts.get(provider, ()), _normal(host))
        local = frozenset(_normal(h) for h in local_hosts.split(',') if h.strip())
        return cls(hosts=hosts, local_hosts=local, max_bytes=max_bytes)

    def allows_host(self, provider: str, host: str) -> bool:
        return any(host_matches(host, pattern) for pattern in self.hosts.get(provider, ()))

    def allows_data_uri(self, provider: str) -> bool:
        return provider in self.data_uri_providers

    def check(self, provider: str, url: str) -> None:
        """Raise :class:`OutputRefused` unless ``provider`` may have this service fetch ``url`` (one hop).

        Resolving the host may raise :class:`OSError` (a DNS failure, which may pass).
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = _normal(parts.hostname or '')
        if not host:
            raise OutputRefused('no host', url)
        local = host in self.local_hosts
        if scheme != 'https' and not (scheme == 'http' and local):
            raise OutputRefused(f'scheme {scheme or "(none)"} is not allowed for host {host}', url)
        if not self.allows_host(provider, host):
            raise OutputRefused(f'host {host} is not an output host of {provider}', url)
        if local:
            return
        try:
            port = parts.port or 443
        except ValueError:
            raise OutputRefused('invalid port', url) from None
        addresses = list(self.resolve(host, port))
        private = [a for a in addresses if not is_public_address(a)]
        if not addresses or private:
            raise OutputRefused(f'host {host} resolves to a non-public address {private[:1]}', url)
