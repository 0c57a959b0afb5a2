"""``python -m infra.local trigger <provider> <event>``: send one payment event to a running ``make dev``.

1. Build the event as the provider would (:mod:`infra.local.triggers.stripe`, ``.revenuecat``), referring to
   what the provider's fake knows of the account (the fakes' URLs come from the offline gateway's
   ``GET /_local/services``).
2. Sign it with the offline stack's local secrets and POST it to the API's webhook (``--times N``: the
   same event N times, as a provider redelivers it).
3. Tell the fake (so the next follow-up can refer to it), print what was sent and what the API answered,
   and, given the account's access token, its balance afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import textwrap
import time
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

import httpx

from infra.local.http_service import LOCAL_SERVICES_PATH
from infra.local.payment_events import RC_AUTH, STRIPE_SECRET, Delivery, send_revenuecat_event, send_stripe_event
from infra.local.triggers import revenuecat, stripe
from infra.local.triggers.spec import PROVIDERS, Provider, Request, Trigger, TriggerError

if TYPE_CHECKING:
    from atelier.payments.catalog import CommerceCatalog

DEFAULT_URL = 'http://127.0.0.1:3000'
DESCRIPTION = """Send one payment event, built, signed and wrapped as Stripe or RevenueCat would, to the webhook of a
running `make dev` (like `stripe trigger`). Follow-up events (refunds, disputes, renewals, ...) refer to the
account's latest purchase that the dev server's fake Stripe / RevenueCat knows, unless given its id. Prints what
was sent, the API's answer and, with the account's access token, its balance afterwards.

examples (TOKEN and ACCOUNT from POST /v1/auth/device):
  python -m infra.local trigger stripe checkout.session.completed --token $TOKEN --pack pack_500
  python -m infra.local trigger stripe charge.refunded --token $TOKEN --amount 1000
  python -m infra.local trigger revenuecat INITIAL_PURCHASE --account $ACCOUNT --product credits_100
"""
TRIGGERS: tuple[Trigger, ...] = (*stripe.TRIGGERS, *revenuecat.TRIGGERS)
WEBHOOKS: dict[Provider, str] = {'stripe': '/webhooks/stripe', 'revenuecat': '/webhooks/revenuecat'}
KNOWN_PATHS: dict[Provider, str] = {'stripe': '/_local/accounts/', 'revenuecat': '/_local/app_users/'}
SIGNED_WITH: dict[Provider, str] = {
    'stripe': f'Stripe-Signature (HMAC-SHA256 with {STRIPE_SECRET})',
    'revenuecat': f'Authorization: Bearer {RC_AUTH}',
}


def events_epilog(provider: Provider | None = None) -> str:
    """The events a trigger can send, one per line, for ``--help``."""
    lines = [
        textwrap.fill(t.help, 110, initial_indent=f'  {t.name:<48} ', subsequent_indent=' ' * 51)
        for t in TRIGGERS
        if provider in (None, t.provider)
    ]
    return 'events (python -m infra.local trigger PROVIDER EVENT --help for its options):\n' + '\n'.join(lines)


def add_parser(subparsers: Any) -> None:
    """``trigger {stripe,revenuecat} EVENT [options]``, each event with its own options and help."""
    trigger = subparsers.add_parser(
        'trigger',
        help='send a signed payment event (Stripe, RevenueCat) to a running make dev',
        description=DESCRIPTION,
        epilog=events_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    providers = trigger.add_subparsers(dest='provider', required=True, metavar='{stripe,revenuecat}')
    common = _common_options()
    for provider in PROVIDERS:
        parser = providers.add_parser(
            provider,
            help=f'a {provider} webhook event',
            epilog=events_epilog(provider),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        events = parser.add_subparsers(dest='event', required=True, metavar='EVENT')
        for spec in (t for t in TRIGGERS if t.provider == provider):
            event = events.add_parser(spec.event, help=spec.help, description=spec.help, parents=[common])
            for option in spec.options:
                event.add_argument(*option.flags, **option.settings)
            event.set_defaults(trigger=spec)


def _common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--account', help='the account (its id; default: the --token holder)')
    common.add_argument(
        '--token',
        default=os.environ.get('ATELIER_TOKEN'),
        help="the account's access token (default $ATELIER_TOKEN): to read its balance afterwards",
    )
    common.add_argument('--url', default=DEFAULT_URL, help=f'the API of make dev (default {DEFAULT_URL})')
    common.add_argument('--times', type=int, default=1, help='send the same event N times (redeliveries)')
    return common


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Send the event; 0 when every delivery was answered 2xx, 1 otherwise, 2 when it could not be built."""
    out = out or sys.stdout
    spec: Trigger = args.trigger
    api = str(args.url).rstrip('/')
    fake = local_services(api).get(spec.provider)
    try:
        account_id = args.account or _token_holder(api, args.token)
        known = _known(fake, spec.provider, account_id)
        now = time.time()  # the real time: events of one second tie in Stripe too (docs/payments.md, "Ordering")
        request = Request(account_id, args, known, _catalog(), int(now), now_ms=int(now * 1000))
        event = spec.build(request)
    except TriggerError as exc:
        missing = '' if fake else f' (no running make dev was found at {api}: start it, or pass its --url)'
        print(f'trigger: error: {exc}{missing}', file=sys.stderr)
        return 2
    if fake and spec.provider == 'stripe':  # Stripe knows an event's objects before the endpoint asks about them
        _tell_fake(fake, spec.provider, event, delivered=False)
    deliveries = [_send(spec.provider, api, event) for _ in range(max(1, args.times))]
    if fake:
        _tell_fake(fake, spec.provider, event, delivered=any(d.ok for d in deliveries))
    _report(out, spec, api, event, deliveries, fake)
    out.write(_balance_line(api, account_id, args.token) + '\n')
    if spec.next_step:
        out.write(f'next: {spec.next_step}\n')
    return 0 if all(d.ok for d in deliveries) else 1


def local_services(api: str) -> dict[str, str]:
    """The side services of the offline stack serving ``api`` ({} when it is not one, or not reachable)."""
    try:
        response = httpx.get(f'{api}{LOCAL_SERVICES_PATH}', timeout=10)
        listed = response.json().get('services') if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in listed.items()} if isinstance(listed, dict) else {}


def _send(provider: Provider, api: str, event: dict[str, Any]) -> Delivery:
    url = api + WEBHOOKS[provider]
    return send_stripe_event(url, event) if provider == 'stripe' else send_revenuecat_event(url, event)


def _known(fake: str | None, provider: Provider, account_id: str) -> dict[str, Any]:
    """What the provider's fake knows of the account ({} without a fake)."""
    if not fake:
        return {}
    try:
        response = httpx.get(f'{fake}{KNOWN_PATHS[provider]}{quote(account_id, safe="")}', timeout=10)
        response.raise_for_status()
    except httpx.HTTPError:
        return {}
    known = response.json()
    return known if isinstance(known, dict) else {}


def _tell_fake(fake: str, provider: Provider, event: dict[str, Any], *, delivered: bool) -> None:
    body = {'event': event, 'delivered': delivered} if provider == 'stripe' else {'body': event}
    with contextlib.suppress(httpx.HTTPError):  # the event was sent; only later defaults would miss it
        httpx.post(f'{fake}/_local/events', json=body, timeout=10)


def _token_holder(api: str, token: str | None) -> str:
    if not token:
        raise TriggerError('name the account: --account ACCOUNT_ID, or --token ACCESS_TOKEN (or $ATELIER_TOKEN)')
    me = _me(api, token)
    if me is None:
        raise TriggerError(f'{api}/v1/me refused the token (expired? sign in again), or is not reachable')
    return str(me['account_id'])


def _me(api: str, token: str) -> dict[str, Any] | None:
    try:
        response = httpx.get(f'{api}/v1/me', headers={'authorization': f'Bearer {token}'}, timeout=30)
    except httpx.HTTPError:
        return None
    return dict(response.json()) if response.status_code == 200 else None


def _balance_line(api: str, account_id: str, token: str | None) -> str:
    if not token:
        return f'balance of {account_id}: not read (pass --token with its access token to see it)'
    me = _me(api, token)
    if me is None:
        return f'balance of {account_id}: not read ({api}/v1/me refused the token)'
    if me.get('account_id') != account_id:
        return f"balance of {account_id}: not read (the token is {me.get('account_id')}'s)"
    balance = me.get('balance') or {}
    return (
        f'balance of {account_id}: {balance.get("available")} available, {balance.get("held")} held; '
        f'plan {me.get("plan")}'
    )


def _report(
    out: TextIO,
    spec: Trigger,
    api: str,
    event: dict[str, Any],
    deliveries: list[Delivery],
    fake: str | None,
) -> None:
    event_id = event['id'] if spec.provider == 'stripe' else event['event']['id']
    webhook = api + WEBHOOKS[spec.provider]
    out.write(f'sent {spec.name} {event_id} to {webhook}, signed with {SIGNED_WITH[spec.provider]}:\n')
    out.write(json.dumps(event, indent=2) + '\n')
    for n, delivery in enumerate(deliveries, 1):
        answer = delivery.body if delivery.status else f'{delivery.body} (is make dev running at {api}?)'
        prefix = f'delivery {n}: ' if len(deliveries) > 1 else ''
        out.write(f'{prefix}HTTP {delivery.status} {answer}\n')
    if not fake:
        out.write(
            f'(no running fake {spec.provider} was found for {api}: later events cannot default to this one; '
            'pass their ids)\n'
        )


def _catalog() -> CommerceCatalog:
    """The commerce catalog the backend sells from (packs, plans, store products)."""
    from infra.local.template import mount_code

    mount_code()
    from atelier.payments.catalog import load_commerce_catalog

    return load_commerce_catalog()
