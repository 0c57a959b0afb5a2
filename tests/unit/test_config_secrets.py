"""Secrets are cached per execution environment for a few minutes, then read again (a rotation spreads)."""

from __future__ import annotations

import pytest

import atelier.config
from atelier.config import SECRET_MAX_AGE_SECONDS, Settings


def test_a_secret_is_read_once_then_again_after_its_max_age(monkeypatch: pytest.MonkeyPatch):
    values, clock = iter(['OLD', 'NEW,OLD']), [1000.0]
    reads: list[str] = []

    def fetch(name: str) -> str:
        reads.append(name)
        return next(values)

    monkeypatch.setattr(atelier.config, '_fetch_secret', fetch)
    monkeypatch.setattr(atelier.config.time, 'monotonic', lambda: clock[0])
    atelier.config.clear_secrets()
    settings = Settings.model_construct(secrets_prefix='/atelier/test/')
    assert settings.secret('auth-token-secret') == settings.secret('auth-token-secret') == 'OLD'
    clock[0] += SECRET_MAX_AGE_SECONDS
    assert settings.secret('auth-token-secret') == 'NEW,OLD'
    assert reads == ['/atelier/test/auth-token-secret'] * 2
    atelier.config.clear_secrets()
