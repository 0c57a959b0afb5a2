"""AI providers behind one port (:class:`~atelier.providers.base.Provider`), and which ones are configured."""

from atelier.providers.base import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    InvalidWebhookSignature,
    Job,
    JobError,
    JobOutput,
    JobState,
    Provider,
    ProviderRejected,
    ProviderUnavailable,
    StartTooLate,
    Status,
)

__all__ = [
    'FINAL_STATUSES',
    'OPEN_STATUSES',
    'InvalidWebhookSignature',
    'Job',
    'JobError',
    'JobOutput',
    'JobState',
    'Provider',
    'ProviderRejected',
    'ProviderUnavailable',
    'StartTooLate',
    'Status',
]
