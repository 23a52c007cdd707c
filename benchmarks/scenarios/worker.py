"""(3) Fraud worker: decided transactions per second, 1 and 2 processes, all rules.

Reuses ``benchmarks/worker_bench.py``: the stream is pre-filled as the api fills it, then
the reference (one entry, one autocommit INSERT, one XACK at a time, no rules) and
``fintrack run worker`` (batched, every rule, events published and archived) drain it.
Counts follow the duration so each variant runs for roughly that long.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time

import psycopg
import redis

from benchmarks import worker_bench
from benchmarks._context import Context
from benchmarks._procs import BenchError
from benchmarks._report import Row, ScenarioResult

NAME = "worker"
TARGET_RATIO = 15.0
# Expected rates, only to size the work to the duration.
_REFERENCE_RATE = 1_000
_WORKER_RATE = 10_000


def run(ctx: Context) -> ScenarioResult:
    o = ctx.options
    n_ref = o.worker_count or max(500, int(_REFERENCE_RATE * o.duration_s))
    n_ours = o.worker_count or max(2_000, int(_WORKER_RATE * o.duration_s))
    base = ctx.settings("worker")
    txns = worker_bench.traffic(max(n_ref, n_ours), o.worker_users)
    client = redis.Redis.from_url(ctx.redis_url)
    rates: dict[str, float] = {}
    seconds: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    database = str(psycopg.conninfo.conninfo_to_dict(base.database_url)["dbname"])
    try:
        for name, n in (("reference", n_ref), ("worker_x1", n_ours), ("worker_x2", n_ours)):
            s = dataclasses.replace(base, key_prefix=f"{base.key_prefix}:{name}")
            worker_bench.reset(s)
            worker_bench.prefill(client, s, txns[:n])
            started = time.perf_counter()
            try:
                if name == "reference":
                    m = asyncio.run(worker_bench.baseline(s, n, database, client))
                else:
                    processes = 1 if name == "worker_x1" else 2
                    m = worker_bench.workers(s, n, processes, database)
            except SystemExit as e:  # worker_bench reports its failures this way
                raise BenchError(f"{name}: {e}") from e
            rates[name] = m.rate
            cpu[name] = {
                "client_s": round(m.client_s, 2),
                "postgres_s": round(m.pg_s, 2),
                "redis_s": round(m.redis_s, 2),
            }
            seconds[name] = round(time.perf_counter() - started, 1)
            rows = worker_bench.count_rows(s)
            if rows != n:
                raise BenchError(f"{name}: {rows} rows for {n} transactions")
    finally:
        client.close()
    ref = rates["reference"]
    x1, x2 = rates["worker_x1"], rates["worker_x2"]
    users = f"{o.worker_users:,} users"
    rows_out = [
        Row(NAME, f"decided txn/s, 1 process, all rules, {users}", "txn/s", x1, ref,
            f">= {TARGET_RATIO:g}x ref", x1 >= TARGET_RATIO * ref),
        Row(NAME, "decided txn/s, 2 processes, all rules", "txn/s", x2, ref),
    ]  # fmt: skip
    detail = {
        "transactions": {"reference": n_ref, "worker": n_ours},
        "users": o.worker_users,
        "txn_per_s": {k: round(v, 1) for k, v in rates.items()},
        "wall_s": seconds,
        # CPU seconds of the client (the reference loop, or the worker processes with their
        # start-up), its PostgreSQL backends and Redis, as worker_bench measures them.
        "cpu_s": cpu,
    }
    return ScenarioResult(NAME, rows_out, detail)
