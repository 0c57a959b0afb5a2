"""Device sign-in and the signed-in account's profile.

A device id alone is not a credential: the first sign-in of a device id creates its account and answers a
server-generated ``device_secret`` once; every later sign-in of that device id must present it. Welcome
credits come with the account, so once per device id (and, with OIDC, once per verified identity), never
per sign-in, and not again after that account is deleted (:mod:`atelier.identity.claims`). New accounts are
rate-limited per source address and globally (the counters are written in the same transaction as the
account, so a refused sign-up creates nothing).

Where device attestation would plug in: App Attest (iOS) / Play Integrity (Android) verdicts would be
checked in :func:`sign_in_device` before an account is opened (``attestation`` in the request body,
verified against Apple's / Google's servers), and could lift the per-address limit for attested devices.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from atelier.catalog.plans import plan_limits
from atelier.errors import DomainError, ErrorKind, Unauthorized
from atelier.identity.devices import DeviceDirectory
from atelier.ledger.errors import ExtraItemConditionFailed
from atelier.ledger.models import Account, GrantSpec, LotKind

if TYPE_CHECKING:
    from atelier.ledger import Ledger


class InvalidDeviceSecret(Unauthorized):
    code = 'invalid_device_secret'


class TooManySignUps(DomainError):
    kind = ErrorKind.RATE_LIMITED
    code = 'too_many_sign_ups'


@dataclass(frozen=True)
class DeviceSignIn:
    account_id: str
    device_secret: str | None  # only when this sign-in created the device (or gave an old device its secret)


@dataclass(frozen=True)
class WelcomeGrant:
    """Promotional credits for every new account; ``credits == 0`` disables them."""

    credits: int = 0
    valid_for: timedelta = timedelta(days=30)


@dataclass(frozen=True)
class SignUpLimits:
    """At most ``per_address_per_hour`` new accounts per source address and hour, ``per_minute`` in all."""

    per_address_per_hour: int = 20
    per_minute: int = 600
    #: The global count is spread over this many items (one hot item would make concurrent sign-ups conflict);
    #: each allows ``per_minute / shards`` (rounded up), so the global limit holds on average.
    shards: int = 10


def new_account_id() -> str:
    return f'acct_{secrets.token_hex(10)}'


def new_device_secret() -> str:
    return f'ds_{secrets.token_urlsafe(32)}'


def sign_in_device(
    device_id: str,
    device_secret: str | None,
    *,
    ledger: Ledger,
    devices: DeviceDirectory,
    source_ip: str,
    limits: SignUpLimits = SignUpLimits(),
    welcome: WelcomeGrant = WelcomeGrant(),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    make_account_id: Callable[[], str] = new_account_id,
) -> DeviceSignIn:
    """The device's account (created on its first sign-in, with its welcome grant), checked by its secret.

    The device mapping, the account, its welcome grant and the sign-up counters are written in one
    transaction, so a device maps to exactly one account however many sign-ins race: the losers of the
    race find the winner's device, and, holding no secret for it, are refused.

    Raises
    ------
    InvalidDeviceSecret
        A known device id without its secret (or with another).
    TooManySignUps
        A new account would exceed the per-address or global limit (``retry_after_seconds`` in details).
    """
    device = devices.find(device_id)
    if device is not None:
        if device.secret_hash is None:
            # A device from before device secrets: it adopts one now (trust on first use, once).
            secret = new_device_secret()
            if devices.adopt_secret(device_id, device.account_id, secret):
                return DeviceSignIn(device.account_id, secret)
            device = devices.find(device_id)
        if device is None or not device.accepts(device_secret):
            raise InvalidDeviceSecret('This device id is taken; sign in with its device_secret.')
        return DeviceSignIn(device.account_id, None)

    candidate, secret, moment = make_account_id(), new_device_secret(), now()
    if devices.was_welcomed(device_id):  # its account was deleted: a new one, but no second welcome
        welcome = WelcomeGrant()
    claims = devices.claim_items(device_id, candidate, moment.isoformat(), secret)
    try:
        open_new_account(
            candidate, claims, ledger=ledger, source_ip=source_ip, limits=limits, welcome=welcome, moment=moment
        )
    except ClaimTaken:  # another sign-in of this device id won the race
        raise InvalidDeviceSecret('This device id is taken; sign in with its device_secret.') from None
    return DeviceSignIn(candidate, secret)


class ClaimTaken(Exception):
    """The device or identity a new account was to claim belongs to another account by now."""


def open_new_account(
    account_id: str,
    claims: list[dict[str, Any]],
    *,
    ledger: Ledger,
    source_ip: str,
    limits: SignUpLimits,
    welcome: WelcomeGrant,
    moment: datetime,
) -> None:
    """Open ``account_id`` with its welcome credits, the ``claims`` (whose first item's condition is "not
    taken yet") and the sign-up counters, in one transaction: all of it, or nothing.

    Raises
    ------
    ClaimTaken
        The claimed device or identity was taken meanwhile.
    TooManySignUps
        A sign-up limit is reached (``retry_after_seconds`` in details).
    """
    grant = None
    if welcome.credits > 0:
        grant = GrantSpec(
            amount=welcome.credits,
            kind=LotKind.PROMO,
            business_id=f'welcome:{account_id}',
            expires_at=moment + welcome.valid_for,
            memo='welcome credits',
        )
    table = claims[0]['Put']['TableName']
    counters = sign_up_counters(table, source_ip, limits, moment)
    try:
        ledger.open_account(account_id, welcome=grant, extra_items=[*claims, *(item for item, _ in counters)])
    except ExtraItemConditionFailed as failed:
        if failed.index < len(claims):
            raise ClaimTaken from None
        raise TooManySignUps(
            'Too many new accounts from here right now; try again later.',
            details={'retry_after_seconds': counters[failed.index - len(claims)][1]},
        ) from None


def sign_up_counters(
    table: str, source_ip: str, limits: SignUpLimits, moment: datetime
) -> list[tuple[dict[str, Any], int]]:
    """The counter updates a new account adds (per address per hour, global per minute), each with the
    seconds until its window ends (the ``Retry-After`` when it is full)."""
    epoch = int(moment.timestamp())
    address = hashlib.sha256(_network_of(source_ip).encode('utf-8')).hexdigest()[:32]
    hour, minute = epoch - epoch % 3600, epoch - epoch % 60
    shard = secrets.randbelow(limits.shards)
    per_shard = -(-limits.per_minute // limits.shards)
    return [
        (
            _counter(table, f'RATE#signup#address#{address}', str(hour), limits.per_address_per_hour, hour + 3600),
            hour + 3600 - epoch,
        ),
        (_counter(table, f'RATE#signup#all#{shard}', str(minute), per_shard, minute + 60), minute + 60 - epoch),
    ]


def _network_of(source_ip: str) -> str:
    """What one client controls: its IPv4 address, or its IPv6 /64 (a host gets a whole /64)."""
    try:
        address = ipaddress.ip_address(source_ip)
    except ValueError:
        return source_ip
    if address.version == 6:
        return str(ipaddress.ip_network(f'{address}/64', strict=False))
    return str(address)


def _counter(table: str, pk: str, sk: str, limit: int, window_end: int) -> dict[str, Any]:
    return {
        'Update': {
            'TableName': table,
            'Key': {'pk': {'S': pk}, 'sk': {'S': sk}},
            'UpdateExpression': 'SET #ttl = :ttl ADD #n :one',
            'ConditionExpression': 'attribute_not_exists(#n) OR #n < :limit',
            'ExpressionAttributeNames': {'#n': 'n', '#ttl': 'ttl'},
            'ExpressionAttributeValues': {
                ':one': {'N': '1'},
                ':limit': {'N': str(limit)},
                ':ttl': {'N': str(window_end + 3600)},
            },
        }
    }


@dataclass(frozen=True)
class Profile:
    account: Account
    max_concurrent_tasks: int


def get_profile(account_id: str, *, ledger: Ledger) -> Profile:
    """The account's plan, balances and limits."""
    account = ledger.get_account(account_id)
    return Profile(account=account, max_concurrent_tasks=plan_limits(account.plan).max_concurrent_tasks)
