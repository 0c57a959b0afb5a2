"""The credit ledger's write cost per operation and its throughput on one hot account, on DynamoDB Local.

(a) Write units per operation: every DynamoDB call the ledger makes gets ``ReturnConsumedCapacity='INDEXES'``
    (injected by a botocore hook), so DynamoDB Local reports what each operation consumed, split into the
    table, the LSI (entries listing) and the GSI (expiry index). Next to it, the AWS billing model computed
    from the items actually written: a transaction costs 2 WCU per item per started KB.
    DynamoDB Local's transactional figures are coarse (it prices the transaction, not each item), hence both.
(b) Holds per second on one account from 1, 4 and 16 threads (distinct tasks, plenty of credit), with the
    re-reads that optimistic concurrency costs. DynamoDB Local serialises transactions, so these numbers
    show the retry behaviour, not AWS latency; the AWS bound for a hot account is printed from (a):
    one partition takes about 1,000 WCU/s.

    python -m infra.bench.ledger_bench [--seconds 3] [--endpoint http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / 'layers' / 'core') not in sys.path:  # the core layer, as Lambda mounts it
    sys.path.insert(0, str(ROOT / 'layers' / 'core'))

from atelier.ledger import DynamoDBLedgerStore, GrantSpec, Ledger, LotKind  # noqa: E402
from tests.support.dynamodb_local import DynamoDBLocal, create_table, run_dynamodb_local  # noqa: E402

PARTITION_WCU_PER_SECOND = 1_000
THREAD_COUNTS = (1, 4, 16)


# ---------------------------------------------------------------- capacity accounting


def _value_size(value: dict[str, Any]) -> int:
    """Bytes of one attribute value, the way DynamoDB sizes items (close enough for rounding to KB)."""
    ((kind, inner),) = value.items()
    if kind == 'S':
        return len(inner.encode())
    if kind == 'N':
        return (len(inner.lstrip('-').replace('.', '')) + 1) // 2 + 1
    if kind == 'L':
        return 3 + sum(1 + _value_size(v) for v in inner)
    if kind == 'M':
        return 3 + sum(len(k.encode()) + 1 + _value_size(v) for k, v in inner.items())
    if kind == 'BOOL' or kind == 'NULL':
        return 1
    return len(str(inner))


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + _value_size(value) for name, value in item.items())


def modelled_wcu(transact_items: list[dict[str, Any]]) -> int:
    """AWS: a transactional write costs 2 WCU per item per started KB (Update/ConditionCheck sized by key)."""
    total = 0
    for action in transact_items:
        ((kind, body),) = action.items()
        size = item_size(body['Item']) if kind == 'Put' else 1
        total += 2 * max(1, math.ceil(size / 1024))
    return total


@dataclass
class Meter:
    """Collects the capacity that each ledger call consumed, per operation label."""

    label: str = ''
    writes: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    parts: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(float)))
    items: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    model: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    reads: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def install(self, client: Any) -> None:
        events = client.meta.events
        for op in ('TransactWriteItems', 'GetItem', 'Query'):
            events.register(f'provide-client-params.dynamodb.{op}', self._ask)
            events.register(f'after-call.dynamodb.{op}', self._record)
        events.register('provide-client-params.dynamodb.TransactWriteItems', self._model)

    @staticmethod
    def _ask(params: dict[str, Any], **_: Any) -> None:
        params['ReturnConsumedCapacity'] = 'INDEXES'

    def _model(self, params: dict[str, Any], **_: Any) -> None:
        if self.label:
            self.items[self.label] += len(params['TransactItems'])
            self.model[self.label] += modelled_wcu(params['TransactItems'])

    def _record(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if not self.label or 'Error' in parsed:
            return
        consumed = parsed.get('ConsumedCapacity')
        consumed = consumed if isinstance(consumed, list) else [consumed] if consumed else []
        total = sum(c.get('CapacityUnits', 0.0) for c in consumed)
        if model.name == 'TransactWriteItems':
            self.writes[self.label].append(total)
            for c in consumed:
                self.parts[self.label]['table'] += c.get('Table', {}).get('CapacityUnits', 0.0)
                for index_kind, name in (('LocalSecondaryIndexes', 'lsi1'), ('GlobalSecondaryIndexes', 'gsi1')):
                    self.parts[self.label][name] += c.get(index_kind, {}).get(name, {}).get('CapacityUnits', 0.0)
        else:
            self.reads[self.label] += total

    @contextlib.contextmanager
    def measuring(self, label: str) -> Iterator[None]:
        self.label = label
        try:
            yield
        finally:
            self.label = ''


def measure_write_units(instance: DynamoDBLocal) -> list[tuple[str, Meter]]:
    client = instance.client()
    meter = Meter()
    meter.install(client)
    table = create_table(client, 'LedgerTable', f'bench-{uuid.uuid4().hex[:8]}')
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    ledger = Ledger(DynamoDBLedgerStore(client, table), clock=lambda: now[0])
    in_a_week = now[0] + timedelta(days=7)

    steps: list[tuple[str, Callable[[], Any]]] = [
        ('open_account (no welcome)', lambda: ledger.open_account('plain')),
        (
            'open_account (+ welcome promo)',
            lambda: ledger.open_account(
                'acct', welcome=GrantSpec(amount=10, kind=LotKind.PROMO, business_id='welcome', expires_at=in_a_week)
            ),
        ),
        ('grant (paid)', lambda: ledger.grant('acct', amount=100, kind=LotKind.PAID, business_id='paid:1')),
        (
            'grant (duplicate delivery)',
            lambda: ledger.grant('acct', amount=100, kind=LotKind.PAID, business_id='paid:1'),
        ),
        ('hold (1 lot)', lambda: ledger.hold('acct', task_id='t1', amount=5)),
        ('hold (2 lots)', lambda: ledger.hold('acct', task_id='t2', amount=20)),
        ('hold (retry of t2)', lambda: ledger.hold('acct', task_id='t2', amount=20)),
        ('capture (2 lots)', lambda: ledger.capture('acct', task_id='t2', amount=12)),
        ('release (1 lot)', lambda: ledger.release('acct', task_id='t1')),
        ('claw_back', lambda: ledger.claw_back('acct', amount=30, business_id='refund:1', reason='refund')),
        ('adjust (+)', lambda: ledger.adjust('acct', amount=5, business_id='ops:1', reason='goodwill', actor='ops')),
    ]
    for label, step in steps:
        with meter.measuring(label):
            step()
    expiring: list[tuple[str, Callable[[], Any]]] = [
        (
            'grant (promo, expiring)',
            lambda: ledger.grant('acct', amount=10, kind=LotKind.PROMO, business_id='promo:2', expires_at=in_a_week),
        ),
        ('hold (1 expiring lot)', lambda: ledger.hold('acct', task_id='t3', amount=4)),
        ('expire (1 lot, by the job)', lambda: ledger.expire(in_a_week + timedelta(seconds=1))),
    ]
    for label, step in expiring:
        if label.startswith('expire'):
            now[0] = in_a_week + timedelta(seconds=1)
        with meter.measuring(label):
            step()
    return [(label, meter) for label, _ in [*steps, *expiring]]


def print_write_units(rows: list[tuple[str, Meter]]) -> list[tuple[str, int]]:
    header = (
        f'{"operation":32} {"items":>5} {"AWS model WCU":>13} {"local WCU":>9} '
        f'{"table":>6} {"lsi1":>5} {"gsi1":>5} {"RCU":>5}'
    )
    print('(a) write units per operation (DynamoDB Local, ReturnConsumedCapacity=INDEXES)')
    print(header)
    print('-' * len(header))
    modelled: list[tuple[str, int]] = []
    for label, meter in rows:
        parts = meter.parts[label]
        print(
            f'{label:32} {meter.items[label]:>5} {meter.model[label]:>13} {sum(meter.writes[label]):>9.1f} '
            f'{parts["table"]:>6.1f} {parts["lsi1"]:>5.1f} {parts["gsi1"]:>5.1f} {meter.reads[label]:>5.1f}'
        )
        modelled.append((label, meter.model[label]))
    print(
        'items: actions in the transaction. AWS model: 2 WCU per item per started KB; index writes (lsi1 for each\n'
        'entry, gsi1 for lots that can expire) come on top, as the local columns show. A duplicate delivery or a\n'
        "retried hold changes nothing: the entry's attribute_not_exists cancels its transaction (DynamoDB Local\n"
        "reports 0; AWS bills a cancelled transaction's items, as the model column says) and the entry is read back."
    )
    return modelled


# ---------------------------------------------------------------- hot account throughput


def hold_throughput(instance: DynamoDBLocal, threads: int, seconds: float) -> tuple[float, float, int]:
    """Holds/s on one account from ``threads`` threads; also commits tried per hold and failures."""
    client = instance.client()
    table = create_table(client, 'LedgerTable', f'bench-{uuid.uuid4().hex[:8]}')
    store = _CountingStore(client, table)
    ledger = Ledger(store)
    ledger.open_account('hot')
    ledger.grant('hot', amount=9_000_000, kind=LotKind.PAID, business_id='paid:1')
    store.commits = 0  # count the run's commits only
    done = [0] * threads
    failures = [0] * threads
    deadline = time.monotonic() + seconds
    barrier = threading.Barrier(threads)

    def worker(n: int) -> None:
        barrier.wait()
        while time.monotonic() < deadline:
            try:
                ledger.hold('hot', task_id=f'w{n}-{done[n]}', amount=1)
                done[n] += 1
            except Exception:  # counted and reported; a bench never stops halfway
                failures[n] += 1

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.monotonic() - started
    holds = sum(done)
    return holds / elapsed, store.commits / max(1, holds), sum(failures)


class _CountingStore(DynamoDBLedgerStore):
    def __init__(self, client: Any, table: str) -> None:
        super().__init__(client, table)
        self.commits = 0
        self._lock = threading.Lock()

    def commit(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.commits += 1
        super().commit(*args, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument('--seconds', type=float, default=3.0, help='duration of each throughput run')
    parser.add_argument('--endpoint', help='use a running DynamoDB Local instead of starting one')
    args = parser.parse_args(argv)

    with _dynamodb_local(args.endpoint) as instance:
        modelled = dict(print_write_units(measure_write_units(instance)))
        hold_wcu = modelled['hold (1 lot)']
        print()
        print(f'(b) holds per second on one hot account (DynamoDB Local, {args.seconds:.0f} s per run)')
        print(f'{"threads":>7} {"holds/s":>8} {"commits per hold":>16} {"failed":>6}')
        for threads in THREAD_COUNTS:
            rate, commits, failed = hold_throughput(instance, threads, args.seconds)
            print(f'{threads:>7} {rate:>8.0f} {commits:>16.2f} {failed:>6}')
        print(
            f'\nAWS bound for one hot account: ~{PARTITION_WCU_PER_SECOND:,} WCU/s per partition (the account, its\n'
            f'lots, holds, entries and their LSI share one partition) / {hold_wcu} WCU per 1-lot hold\n'
            f'(+ index writes)\n'
            f'= about {PARTITION_WCU_PER_SECOND // hold_wcu} holds/s, or about '
            f'{PARTITION_WCU_PER_SECOND // (hold_wcu + modelled["capture (2 lots)"])} hold+capture task lifecycles/s.'
        )
    return 0


@contextlib.contextmanager
def _dynamodb_local(endpoint: str | None) -> Iterator[DynamoDBLocal]:
    if endpoint:
        yield DynamoDBLocal(endpoint=endpoint, pid=0, log_path=Path('/dev/null'))
        return
    with run_dynamodb_local() as instance:
        yield instance


if __name__ == '__main__':
    raise SystemExit(main())
