"""Errors of the payments domain (each a :class:`DomainError`, mapped to a status by ``atelier.api.http``)."""

from __future__ import annotations

from atelier.errors import Conflict, DomainError, ErrorKind, NotFound, Unauthorized


class InvalidSignature(Unauthorized):
    """A Stripe webhook whose ``Stripe-Signature`` does not verify (or is missing, or too old). Nothing stored.

    401, like every webhook whose sender is not proven (Stripe retries any non-2xx alike)."""

    code = 'invalid_signature'


class WebhookUnauthorized(Unauthorized):
    """A RevenueCat webhook without the configured ``Authorization`` value. Nothing stored."""

    code = 'invalid_webhook_authorization'


class MalformedEvent(DomainError):
    """An authentic request whose body is not a provider event we can read."""

    kind = ErrorKind.BAD_REQUEST
    code = 'malformed_event'


class ModeMismatch(DomainError):
    """A live event reached a test stage (or a production store event a sandbox stage): refused."""

    kind = ErrorKind.BAD_REQUEST
    code = 'mode_mismatch'


class UnknownItem(NotFound):
    """Checkout of a pack or plan that the catalog does not sell."""

    code = 'unknown_item'


class AlreadySubscribed(Conflict):
    code = 'already_subscribed'


class PaymentsUnavailable(DomainError):
    """A dependency failed while applying a verified event or creating a checkout; retrying is safe."""

    kind = ErrorKind.UNAVAILABLE
    code = 'payments_unavailable'


class StateContended(PaymentsUnavailable):
    """A payment state item kept changing under us past the retry budget."""

    code = 'payment_state_contended'


class ProviderRefused(DomainError):
    """A provider API answered 4xx to a backfill request (a bad key, a bad id): retrying it will not help."""

    kind = ErrorKind.UNAVAILABLE
    code = 'payments_provider_refused'
