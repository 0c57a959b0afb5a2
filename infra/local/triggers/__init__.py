"""``python -m infra.local trigger``: every payment event the backend handles, one command each, like
``stripe trigger``: built as Stripe / RevenueCat build it, signed with the local secrets, posted to a running
``make dev``. See :mod:`infra.local.triggers.cli`."""

from infra.local.triggers.cli import TRIGGERS, add_parser, events_epilog, run

__all__ = ['TRIGGERS', 'add_parser', 'events_epilog', 'run']
