"""Device sign-in and the signed-in account's profile."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from atelier.catalog.plans import plan_limits
from atelier.identity.devices import DeviceDirectory
from atelier.identity.tokens import issue_token
from atelier.ledger.errors import ExtraItemConditionFailed
from atelier.ledger.models import Account, GrantSpec, LotKind

if TYPE_CHECKING:
    from atelier.ledger import Ledger


@dataclass(frozen=True)
class DeviceSession:
    account_id: str
    token: str
    expires_in: int


@dataclass(frozen=True)
class WelcomeGrant:
    """Promotional credits for every new account; ``credits == 0`` disables them."""

    credits: int = 0
    valid_for: timedelta = timedelta(days=30)


def new_account_id() -> str:
    return f'acct_{secrets.token_hex(10)}'


def sign_in_device(
    device_id: str,
    *,
    ledger: Ledger,
    devices: DeviceDirectory,
    token_key: str,
    token_ttl_seconds: int,
    welcome: WelcomeGrant = WelcomeGrant(),
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    make_account_id: Callable[[], str] = new_account_id,
) -> DeviceSession:
    """Sign a device in: its account (created on first sign-in) and a fresh bearer token.

    The device mapping, the account and its welcome grant are written in one transaction, so a
    device maps to exactly one account however many sign-ins race: the losers of the race find the
    winner's mapping and sign in to that account.
    """
    account_id = devices.account_of(device_id)
    if account_id is None:
        candidate = make_account_id()
        moment = now()
        grant = None
        if welcome.credits > 0:
            grant = GrantSpec(
                amount=welcome.credits,
                kind=LotKind.PROMO,
                business_id=f'welcome:{candidate}',
                expires_at=moment + welcome.valid_for,
                memo='welcome credits',
            )
        try:
            ledger.open_account(
                candidate, welcome=grant, extra_items=[devices.claim_item(device_id, candidate, moment.isoformat())]
            )
            account_id = candidate
        except ExtraItemConditionFailed:
            account_id = devices.account_of(device_id)
            if account_id is None:  # pragma: no cover - the mapping that failed the condition exists
                raise
    token = issue_token(account_id, key=token_key, ttl_seconds=token_ttl_seconds, now=now().timestamp())
    return DeviceSession(account_id=account_id, token=token, expires_in=token_ttl_seconds)


@dataclass(frozen=True)
class Profile:
    account: Account
    max_concurrent_tasks: int


def get_profile(account_id: str, *, ledger: Ledger) -> Profile:
    """The account's plan, balances and limits."""
    account = ledger.get_account(account_id)
    return Profile(account=account, max_concurrent_tasks=plan_limits(account.plan).max_concurrent_tasks)
