"""The task service with its real adapters, built from settings once per execution environment."""

from __future__ import annotations

from functools import cache

from atelier.catalog import load_catalog
from atelier.config import get_settings
from atelier.providers.registry import configured_providers
from atelier.storage import MediaStore, OutputPolicy
from atelier.tasks.adapters import SqsDispatchQueue, StepFunctionsWorkflow
from atelier.tasks.service import TaskService
from atelier.tasks.store import TaskStore


@cache
def media() -> MediaStore:
    settings = get_settings()
    policy = OutputPolicy.configure(
        output_hosts=settings.output_hosts,
        local_hosts=settings.output_local_hosts,
        max_bytes=settings.output_max_bytes,
        base_urls={'mock': settings.mock_provider_url, 'cog': settings.cog_provider_url},
    )
    return MediaStore(settings.media_bucket, policy=policy)


@cache
def task_service() -> TaskService:
    """The :class:`TaskService` on DynamoDB, the ledger, S3, SQS, Step Functions and the configured providers."""
    from atelier.wiring import ledger

    settings = get_settings()
    catalog = load_catalog()
    providers = configured_providers(settings, secret=settings.secret, catalog=catalog)
    return TaskService(
        store=TaskStore(settings.tasks_table),
        # The shared ledger: tasks never list entries, so their steps never read the token secret for cursors.
        ledger=ledger(),
        catalog=catalog.available(providers.names, providers.offers),
        providers=providers,
        media=media(),
        queue=SqsDispatchQueue(settings.task_queue_url),
        workflow=StepFunctionsWorkflow(settings.task_state_machine_arn),
        public_api_url=settings.public_api_url,
        sweep_grace_seconds=settings.task_sweep_grace_seconds,
    )
