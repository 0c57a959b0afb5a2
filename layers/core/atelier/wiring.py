"""Composition root: the real adapters, built from settings once per execution environment.

Handlers call these; domain code receives what they return. Tests build their own instances
(with fakes, moto or DynamoDB Local) instead of calling these.

Nothing here reads a secret while wiring: a secret is fetched when an operation first needs it, so
each function reads exactly the secrets of the paths it runs, and its role grants exactly those
(template.yaml; tests/unit/infra/test_template_policies.py keeps the two in step).
"""

from __future__ import annotations

import hashlib
import hmac
from functools import cache, lru_cache

from atelier.aws import client
from atelier.config import AUTH_TOKEN_SECRET, get_settings
from atelier.identity.api_keys import ApiKeys
from atelier.identity.claims import AccountClaims
from atelier.identity.deletion import AccountPurge, DeletionMarks, SqsDeletionQueue
from atelier.identity.devices import DeviceDirectory
from atelier.identity.identities import IdentityDirectory
from atelier.identity.oidc import OidcVerifier, parse_providers
from atelier.identity.sessions import Sessions, SessionStore
from atelier.identity.tokens import Keyring
from atelier.ledger import DynamoDBLedgerStore, Ledger


def keyring() -> Keyring:
    """The access-token keys (the secret ``auth-token-secret``, re-read every few minutes, so a rotation reaches
    every execution environment); a weak secret is refused outside ``local``."""
    settings = get_settings()
    return _keyring(settings.secret(AUTH_TOKEN_SECRET), settings.stage)


@lru_cache(maxsize=4)
def _keyring(value: str, stage: str) -> Keyring:
    return Keyring.parse(value, stage=stage)


def derived_key(purpose: str) -> bytes:
    """A key for ``purpose`` derived from the current signing key, so one secret signs all opaque values."""
    return hmac.new(keyring().signing.secret, purpose.encode('utf-8'), hashlib.sha256).digest()


def _cursor_key() -> bytes:
    return derived_key('cursor')


@cache
def ledger() -> Ledger:
    """The one ledger of this execution environment (tasks and payments use it too).

    Its cursor key is derived on first use: only listing entries (``GET /v1/ledger``) signs or checks a
    cursor, so only the ledger API reads the token secret for it; the ledger jobs never do.
    """
    settings = get_settings()
    return Ledger(DynamoDBLedgerStore(client('dynamodb'), settings.ledger_table), cursor_key=_cursor_key)


@cache
def devices() -> DeviceDirectory:
    return DeviceDirectory(get_settings().ledger_table, client('dynamodb'))


@cache
def sessions() -> Sessions:
    settings = get_settings()
    store = SessionStore(
        settings.ledger_table, client('dynamodb'), refresh_ttl_seconds=settings.refresh_token_ttl_days * 86400
    )
    return Sessions(store, keyring, access_ttl_seconds=settings.access_token_ttl_seconds)


@cache
def identities() -> IdentityDirectory:
    return IdentityDirectory(get_settings().ledger_table, client('dynamodb'))


@cache
def oidc_verifier() -> OidcVerifier:
    """The enabled OIDC providers; one per execution environment, so their key sets stay cached."""
    settings = get_settings()
    return OidcVerifier(parse_providers(settings.oidc_providers, allow_insecure_local=settings.stage == 'local'))


@cache
def api_keys() -> ApiKeys:
    return ApiKeys(get_settings().ledger_table, client('dynamodb'))


@cache
def deletion_marks() -> DeletionMarks:
    return DeletionMarks(get_settings().ledger_table, client('dynamodb'))


@cache
def deletion_queue() -> SqsDeletionQueue:
    return SqsDeletionQueue(get_settings().account_deletion_queue_url)


@cache
def account_purge() -> AccountPurge:
    """The account deletion's purge on the real adapters (tasks, S3, the ledger and events tables)."""
    from atelier.payments.store import PaymentsTable
    from atelier.tasks.wiring import media, task_service

    settings = get_settings()
    return AccountPurge(
        marks=deletion_marks(),
        queue=deletion_queue(),
        sessions=sessions(),
        api_keys=api_keys(),
        tasks=task_service(),
        media=media(),
        claims=AccountClaims(settings.ledger_table, client('dynamodb')),
        payments=PaymentsTable(settings.events_table, client('dynamodb')),
    )


def reset() -> None:
    """Forget every adapter built here (tests that change settings between cases)."""
    for built in (
        _keyring,
        ledger,
        devices,
        sessions,
        identities,
        oidc_verifier,
        api_keys,
        deletion_marks,
        deletion_queue,
        account_purge,
    ):
        built.cache_clear()
