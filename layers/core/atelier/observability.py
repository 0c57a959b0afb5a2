"""Logger and metrics, created once and shared by every handler and domain module.

The metrics namespace comes from ``POWERTOOLS_METRICS_NAMESPACE`` (the template sets it for every function);
``Atelier`` when it is unset, so that a process that imported this before its environment was complete (a test
worker) still flushes its metrics instead of failing.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

METRICS_NAMESPACE = 'Atelier'

logger = Logger()
metrics = Metrics(namespace=os.environ.get('POWERTOOLS_METRICS_NAMESPACE') or METRICS_NAMESPACE)
