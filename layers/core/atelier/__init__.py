"""Atelier's domain package: identity, ledger, tasks, pricing, providers, payments, storage.

Shipped to every function as the core layer (``layers/core``). Data flows one way:
handler -> domain -> adapters. Domain code never reads ``os.environ`` or a Lambda event.
"""
