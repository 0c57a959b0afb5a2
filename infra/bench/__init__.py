"""Benchmarks: they measure and print; tests assert. ``python -m infra.bench`` runs them all."""
