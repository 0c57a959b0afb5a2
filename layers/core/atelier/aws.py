"""boto3 clients, created once per execution environment and shared by the adapters."""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def client(service: str) -> Any:
    """A cached boto3 client for ``service`` (endpoint and region come from the environment)."""
    import boto3
    from botocore.config import Config

    return boto3.client(service, config=Config(retries={'mode': 'standard', 'max_attempts': 5}))
