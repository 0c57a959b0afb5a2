"""Payments: Stripe and RevenueCat turn money into credits, exactly once (see docs/payments.md).

Modules: ``catalog`` (what money buys), ``state`` (pure payment and subscription rules), ``book`` (state
on the events table, kept in step with the ledger), ``stripe_events`` / ``revenuecat_events`` (what each
provider event means), ``inbox`` (store raw, apply, record), ``summary`` (what an event's permanent record
keeps), ``service`` (what the functions call), ``stripe_gateway`` (the only module importing ``stripe``),
``revenuecat_api`` (RevenueCat's REST API, httpx), ``backfill`` (Stripe's Events API and RevenueCat
subscribers through the inbox). Importing this package loads none of them.
"""
