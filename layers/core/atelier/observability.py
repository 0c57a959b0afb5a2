"""Logger and metrics, created once and shared by every handler and domain module."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

logger = Logger()
metrics = Metrics()
