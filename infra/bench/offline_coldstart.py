"""Cold init and warm invocation of every API function on the offline stack, next to a bare boto3 handler.

Each function runs in execution environments of its own (:mod:`infra.local.runtime`): the first invocation of
a fresh environment is a cold start, whose init phase (interpreter start + handler module import) is what
Lambda reports as ``Init Duration``. For each API function the bench retires its environments, sends one
request through the gateway (cold: init and duration), then ``--warm`` more (warm: median duration). The
reference is ``BareFunction``, a handler that imports only boto3, added to a copy of the template and measured
the same way in the same run, so the numbers compare across machines.

    python -m infra.bench.offline_coldstart [--runs 3] [--warm 20]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from dataclasses import dataclass
from typing import Any

#: One cheap request per API function, through the gateway: unauthenticated where the route needs a token
#: (a 401 still runs the whole handler module's init and the resolver), so no state is needed.
REQUESTS = {
    'BareFunction': ('GET', '/bare'),
    'MetaApiFunction': ('GET', '/health'),
    'IdentityApiFunction': ('GET', '/v1/me'),
    'LedgerApiFunction': ('GET', '/v1/ledger'),
    'TasksApiFunction': ('GET', '/v1/tasks'),
    'CatalogApiFunction': ('GET', '/v1/models'),
    'UploadsApiFunction': ('POST', '/v1/uploads'),
    'PaymentsApiFunction': ('GET', '/v1/packs'),
    'StripeWebhookFunction': ('POST', '/webhooks/stripe'),
    'RevenueCatWebhookFunction': ('POST', '/webhooks/revenuecat'),
    'ProviderWebhookFunction': ('POST', '/webhooks/providers/mock'),
}


@dataclass(frozen=True)
class Row:
    function: str
    init_ms: float
    cold_ms: float
    warm_ms: float


def bench_template() -> dict[str, Any]:
    from infra.local.template import load_template

    template = copy.deepcopy(load_template())
    template['Resources']['BareFunction'] = {
        'Type': 'AWS::Serverless::Function',
        'Properties': {
            'CodeUri': 'infra/bench/bare/',
            'Handler': 'app.lambda_handler',
            'Layers': [],
            'Events': {
                'Api': {
                    'Type': 'HttpApi',
                    'Properties': {'ApiId': {'Ref': 'HttpApi'}, 'Path': '/bare', 'Method': 'GET'},
                }
            },
        },
    }
    return template


def measure(server: Any, function: str, runs: int, warm: int) -> Row:
    import httpx

    runtime = server.stack.runtime
    method, path = REQUESTS[function]
    inits, colds, warms = [], [], []
    with httpx.Client(base_url=server.url, timeout=60) as http:
        for _ in range(runs):
            runtime.retire(function)
            before = len(runtime.invocations)
            http.request(method, path, content=b'{}', headers={'content-type': 'application/json'})
            for _ in range(warm):
                http.request(method, path, content=b'{}', headers={'content-type': 'application/json'})
            mine = [i for i in runtime.invocations[before:] if i.function == function]
            inits.append(mine[0].init_ms or 0.0)
            colds.append(mine[0].duration_ms)
            warms.extend(i.duration_ms for i in mine[1:])
    return Row(function, statistics.median(inits), statistics.median(colds), statistics.median(warms))


def render(rows: list[Row]) -> str:
    reference = rows[0]
    lines = [
        "Offline cold start per API function: own worker process, median (init = Lambda's Init Duration)",
        f'{"function":<28} {"init ms":>9} {"x bare":>7} {"1st call ms":>12} {"warm ms":>9} {"x bare":>7}',
        '-' * 78,
    ]
    for row in rows:
        lines.append(
            f'{row.function:<28} {row.init_ms:>9.1f} {row.init_ms / reference.init_ms:>7.2f} {row.cold_ms:>12.1f} '
            f'{row.warm_ms:>9.2f} {row.warm_ms / max(reference.warm_ms, 0.01):>7.2f}'
        )
    lines.append('BareFunction imports only boto3 (the floor every Python handler pays).')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--warm', type=int, default=20)
    args = parser.parse_args(argv)

    from infra.local.server import LocalServer

    with LocalServer(
        port=0, schedule_seconds=3600.0, parameters={'LogLevel': 'WARNING'}, template=bench_template()
    ) as server:
        rows = [measure(server, function, args.runs, args.warm) for function in REQUESTS]
    sys.stdout.write(render(rows) + '\n')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
