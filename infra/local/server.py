"""The whole offline product: the stack, its side services and the gateway, started in order.

The gateway's socket is bound first so that its URL (where providers send webhooks) can be passed
to the template as a parameter, exactly as a deployed stack is told its public URL. Side services
stand in for the outside world: the mock AI provider (a real HTTP provider that sends signed
webhooks), a fake fal.ai (its queue API, ED25519-signed webhooks and JWKS), a fake RunPod serverless API
(a worker behind /run, /status, /cancel; unsigned webhooks), a real Cog server, a fake Stripe API
(whose checkout page's Pay button sends signed webhooks to this API), a fake RevenueCat API and an OIDC issuer.
While it runs, the gateway answers ``GET /_local/services`` with their addresses, for local tools
(``python -m infra.local trigger`` finds the fake Stripe there; offline only, never a route in AWS).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from infra.local.gateway import Gateway
from infra.local.stack import LOCAL_SECRETS, OfflineStack
from infra.local.template import mount_code


class SideService(Protocol):
    def start(self) -> str: ...

    def stop(self) -> None: ...


class LocalServer:
    """``with LocalServer(port=0) as server: server.url`` — everything up on 127.0.0.1."""

    def __init__(
        self,
        *,
        port: int = 3000,
        schedule_seconds: float = 5.0,
        welcome_credits: int = 0,
        parameters: dict[str, str] | None = None,
        **stack_options: Any,
    ) -> None:
        self.port = port
        self.schedule_seconds = schedule_seconds
        self.parameters = {'WelcomeCredits': str(welcome_credits), **(parameters or {})}
        self.stack_options = stack_options
        self.stack: OfflineStack
        self.gateway: Gateway
        self.services: dict[str, SideService] = {}
        self.url = ''

    def start(self) -> LocalServer:
        mount_code()
        from atelier.providers.mock.server import MockProviderServer
        from atelier.storage.output_policy import DEFAULT_OUTPUT_HOSTS
        from infra.local.cog_server import CogModelServer
        from infra.local.fake_fal import USER_ID as FAL_USER_ID
        from infra.local.fake_fal import FakeFal
        from infra.local.fake_revenuecat import FakeRevenueCatServer
        from infra.local.fake_runpod import LOCAL_ENDPOINT as RUNPOD_ENDPOINT
        from infra.local.fake_runpod import FakeRunPod
        from infra.local.fake_stripe import FakeStripeServer
        from infra.local.oidc_issuer import DEFAULT_AUDIENCE, LocalOidcIssuer

        self.stack = OfflineStack(schedule_seconds=self.schedule_seconds, **self.stack_options)
        self.gateway = Gateway(self.stack, port=self.port)
        self.url = self.gateway.url
        self.services['mock_provider'] = MockProviderServer(
            webhook_url=f'{self.url}/webhooks/providers/mock',
            webhook_secret=LOCAL_SECRETS['provider-webhook-secret-mock'],
        )
        self.services['stripe'] = FakeStripeServer(
            webhook_url=f'{self.url}/webhooks/stripe', webhook_secret=LOCAL_SECRETS['stripe-webhook-secret']
        )
        self.services['revenuecat'] = FakeRevenueCatServer(api_key=LOCAL_SECRETS['revenuecat-api-key'])
        self.services['cog'] = CogModelServer()
        self.services['fal'] = FakeFal(token=LOCAL_SECRETS['provider-api-token-fal'])
        self.services['runpod'] = FakeRunPod(token=LOCAL_SECRETS['provider-api-token-runpod'])
        self.services['oidc'] = LocalOidcIssuer()
        urls = {name: service.start() for name, service in self.services.items()}
        local_provider = {'id': 'local', 'issuer': urls['oidc'], 'client_ids': [DEFAULT_AUDIENCE]}
        # The fakes serve outputs from 127.0.0.1 over http; the real CDNs stay allowed too.
        output_hosts = {name: [*hosts, '127.0.0.1'] for name, hosts in DEFAULT_OUTPUT_HOSTS.items()}
        self.stack.parameters.update(
            {
                'PublicApiUrl': self.url,
                'MockProviderUrl': urls['mock_provider'],
                'StripeApiBase': urls['stripe'],
                'RevenueCatApiBase': urls['revenuecat'],
                'CogProviderUrl': urls['cog'],
                'FalEnabled': 'true',
                'FalApiBase': urls['fal'],
                'FalJwksUrl': f'{urls["fal"]}/.well-known/jwks.json',
                'FalUserId': FAL_USER_ID,  # the fake signs for this fal user: the pin is checked offline too
                'RunPodApiBase': urls['runpod'],
                'RunPodEndpoints': json.dumps({'runpod/image-worker': RUNPOD_ENDPOINT}),
                'OutputHosts': json.dumps(output_hosts),
                'OutputLocalHosts': '127.0.0.1,localhost',
                'OidcProviders': json.dumps([local_provider]),
                **self.parameters,
            }
        )
        self.stack.start()
        self.gateway.start()
        self.gateway.local_services = dict(urls)
        return self

    def stop(self) -> None:
        self.gateway.stop()
        self.stack.stop()
        for service in self.services.values():
            service.stop()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
