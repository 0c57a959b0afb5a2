"""What a trigger is: a provider's event type, its command-line options, and how its event is built."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from atelier.payments.catalog import CommerceCatalog

Provider = Literal['stripe', 'revenuecat']
PROVIDERS: tuple[Provider, ...] = ('stripe', 'revenuecat')


class TriggerError(Exception):
    """The event cannot be built as asked; the message says what to pass instead."""


@dataclass(frozen=True)
class Option:
    """One command-line option of a trigger: ``argparse`` flags and settings."""

    flags: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """What a trigger builds its event from.

    ``known`` is what the provider's fake knows of the account (the fake Stripe's ``GET /_local/accounts/{id}``,
    the fake RevenueCat's ``GET /_local/app_users/{id}``), empty when no running fake was found: follow-up
    events default to the account's latest objects there.
    """

    account_id: str
    args: argparse.Namespace
    known: dict[str, Any]
    catalog: CommerceCatalog
    now: int  # unix seconds: Stripe's ``created``, periods
    now_ms: int | None = None  # unix milliseconds (RevenueCat's ``event_timestamp_ms``); default ``now`` * 1000

    @property
    def timestamp_ms(self) -> int:
        return self.now_ms if self.now_ms is not None else self.now * 1000

    def arg(self, name: str) -> Any:
        return getattr(self.args, name, None)


Builder = Callable[[Request], dict[str, Any]]


@dataclass(frozen=True)
class Trigger:
    provider: Provider
    event: str
    help: str
    build: Builder
    options: tuple[Option, ...] = ()
    next_step: str = ''  # printed after sending: what usually follows

    @property
    def name(self) -> str:
        return f'{self.provider} {self.event}'
