"""Cold-start import cost of every function's handler module, measured in fresh interpreters.

For each function the template declares, a new Python process imports its handler module (with the
core layer on the path, as Lambda mounts it) and reports how long the import took. The median of
several runs is printed next to ``import boto3`` measured the same way in the same run, so the numbers
compare across machines. Also reports which heavy SDKs each handler pulls in: only the payment
functions may import stripe.

    python -m infra.bench.coldstart [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from dataclasses import dataclass

from infra.local.template import ROOT, function_specs, load_template, resources_of_type

HEAVY_MODULES = ('stripe', 'httpx', 'boto3', 'pynamodb', 'pydantic')
PAYMENT_FUNCTIONS_PREFIXES = (
    'functions.payments_api',
    'functions.stripe_webhook',
    'functions.revenuecat_webhook',
    'functions.replay_payment_event',
    'functions.backfill_payments',
)

_PROBE = """
import json, sys, time
sys.path[:0] = {paths!r}
start = time.perf_counter()
import {module}
elapsed = time.perf_counter() - start
print(json.dumps({{'seconds': elapsed, 'loaded': [m for m in {heavy!r} if m in sys.modules]}}))
"""


@dataclass(frozen=True)
class Measurement:
    name: str
    module: str
    median_ms: float
    loaded: tuple[str, ...]


def layer_paths() -> list[str]:
    layers = resources_of_type(load_template(), 'AWS::Serverless::LayerVersion').values()
    return [str(ROOT / layer['Properties']['ContentUri']) for layer in layers] + [str(ROOT)]


def handler_modules() -> dict[str, str]:
    """Logical id -> the module Lambda imports for it (``functions.<dir>.app``)."""
    modules = {}
    for spec in function_specs().values():
        package = '.'.join(spec.code_dir.relative_to(ROOT).parts)
        modules[spec.logical_id] = f'{package}.{spec.handler.rsplit(".", 1)[0]}'
    return modules


def measure(module: str, runs: int) -> tuple[float, tuple[str, ...]]:
    timings, loaded = [], ()
    probe = _PROBE.format(paths=layer_paths(), module=module, heavy=HEAVY_MODULES)
    for _ in range(runs):
        out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True, cwd=ROOT)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        timings.append(result['seconds'])
        loaded = tuple(result['loaded'])
    return statistics.median(timings) * 1000, loaded


def run(runs: int = 5) -> list[Measurement]:
    results = [Measurement('import boto3 (reference)', 'boto3', *measure('boto3', runs))]
    for name, module in sorted(handler_modules().items()):
        results.append(Measurement(name, module, *measure(module, runs)))
    return results


def stripe_violations(results: list[Measurement]) -> list[str]:
    return [
        r.name
        for r in results
        if 'stripe' in r.loaded and not r.module.startswith(PAYMENT_FUNCTIONS_PREFIXES) and r.module != 'boto3'
    ]


def render(results: list[Measurement]) -> str:
    reference = results[0].median_ms
    lines = [
        'Cold start: handler module import, fresh interpreter, median',
        f'{"function":<34} {"ms":>8} {"x boto3":>8}  heavy modules loaded',
        '-' * 90,
    ]
    for r in results:
        lines.append(f'{r.name:<34} {r.median_ms:>8.1f} {r.median_ms / reference:>8.2f}  {", ".join(r.loaded) or "-"}')
    violations = stripe_violations(results)
    lines.append('')
    lines.append('stripe imported only by payment functions: ' + ('yes' if not violations else f'NO: {violations}'))
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--runs', type=int, default=5)
    args = parser.parse_args(argv)
    results = run(args.runs)
    sys.stdout.write(render(results) + '\n')
    return 1 if stripe_violations(results) else 0


if __name__ == '__main__':
    raise SystemExit(main())
