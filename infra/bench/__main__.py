"""``make bench``: every benchmark, one after the other, each printing its own table.

Benchmarks measure; tests assert. Nothing here runs in ``make test``.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = (
    'infra.bench.coldstart',
    'infra.bench.offline_coldstart',
    'infra.bench.ledger_bench',
    'infra.bench.lifecycle_bench',
)


def main() -> int:
    status = 0
    for name in BENCHMARKS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name != name:
                raise
            sys.stdout.write(f'\n== {name}: not written yet\n')
            continue
        sys.stdout.write(f'\n== {name}\n')
        sys.stdout.flush()
        status |= int(module.main([]) or 0)
    return status


if __name__ == '__main__':
    raise SystemExit(main())
