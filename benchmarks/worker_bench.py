"""Fraud worker throughput: batched workers against a one-at-a-time baseline.

    uv run python benchmarks/worker_bench.py [--count N] [--users U]

Pre-fills the transactions stream with N transactions (as the api enqueues them: the
entry plus the user's activity-ledger member) and measures decided transactions per
second for:

  baseline   in this process: XREADGROUP COUNT 1, one autocommit INSERT, one XACK per
             transaction, no rules (the naive loop the worker is designed to beat);
  worker x1  one `fintrack run worker` process, all rules, events published and archived;
  worker x2  two such processes sharing the consumer group.

Worker throughput is timed from the first acknowledged entry to the last, so process
start-up is left out. The JSON also gives the CPU seconds each scenario's client (the
baseline loop, or the worker processes including start-up) and Redis used, and the load
average when the run began: on a small shared machine the servers' share of the cores,
not the worker's code, sets the ceiling.

Loopback only: Redis on 127.0.0.1 and a fresh PostgreSQL database created for the run and
dropped afterwards; every Redis key lives under its own prefix and is deleted at the end.
Prints a table and a JSON line with the ratios to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg
import redis
from psycopg import sql
from uvloop import new_event_loop  # the worker's loop too: a like-for-like baseline

from fintrack.config import Settings
from fintrack.core.activity import activity_key, encode_member
from fintrack.core.db import migrate
from fintrack.core.models import Transaction, transaction_decoder, transaction_encoder
from fintrack.core.streams import TXN_GROUP

REDIS_URL = "redis://127.0.0.1:6379/0"
ADMIN_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TIMEOUT_S = 600.0  # per scenario: the benchmark always ends

# Same as the api: XADD the entry, ZADD the ledger member scored by the entry's position.
_ENQUEUE = """
for i = 2, #KEYS do
  local id = redis.call('XADD', KEYS[1], '*', 'txn', ARGV[2 * i - 3])
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  seq = math.min(tonumber(seq), 999)
  redis.call('ZADD', KEYS[i], ms .. string.format('%03d', seq), ARGV[2 * i - 2])
end
return #KEYS - 1
"""

_MERCHANTS = ("general",) * 12 + ("grocery", "travel", "luxury_goods", "crypto", "gift_cards")
_CURRENCIES = ("INR",) * 6 + ("USD", "USD", "EUR", "GBP", "JPY")


def _loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing a non-loopback server: {host}")


def traffic(n: int, users: int, seed: int = 42) -> list[Transaction]:
    """A realistic mix: mostly small everyday payments, some risky categories, a few big
    amounts and currencies other than INR."""
    rng = random.Random(seed)
    now_ms = time.time_ns() // 1_000_000
    txns = []
    for _ in range(n):
        currency = rng.choice(_CURRENCIES)
        amount = Decimal(rng.randrange(100, 2_000_000)) / 100
        if currency == "JPY":
            amount = amount.quantize(Decimal(1)) + 1
        elif rng.random() < 0.02:
            amount *= 100
        txns.append(
            Transaction(
                txn_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                user_id=f"user_{rng.randrange(users)}",
                amount=amount,
                currency=currency,
                merchant_type=rng.choice(_MERCHANTS),
                source_ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                client_id="bench",
                received_at_ms=now_ms,
            )
        )
    return txns


def prefill(client: redis.Redis, settings: Settings, txns: list[Transaction]) -> None:
    """Enqueue ``txns`` as the api would, and create the workers' consumer group."""
    client.xgroup_create(settings.txn_stream, TXN_GROUP, id="0", mkstream=True)
    script = client.register_script(_ENQUEUE)
    for start in range(0, len(txns), 500):
        part = txns[start : start + 500]
        keys = [settings.txn_stream, *(activity_key(settings, t.user_id) for t in part)]
        args: list[Any] = []
        for t in part:
            args += [transaction_encoder.encode(t), encode_member(t)]
        script(keys=keys, args=args)


def reset(settings: Settings) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("TRUNCATE transactions, rule_hits, security_events")


def count_rows(settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM transactions").fetchone()
    return int(row[0]) if row else 0


# ---- (a) the one-at-a-time baseline ---------------------------------------------------

_INSERT_ONE = """
INSERT INTO transactions (txn_id, client_id, user_id, amount, currency, merchant_type,
                          source_ip, status, risk_score, received_at, decided_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, 'APPROVED', 0,
        timestamptz 'epoch' + %s * interval '1 millisecond', now())
ON CONFLICT (txn_id) DO NOTHING
"""


async def baseline(settings: Settings, n: int) -> float:
    """Decided per second, one entry per read, one INSERT (autocommit), one XACK each."""
    from redis.asyncio import Redis

    r = Redis.from_url(settings.redis_url)
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
    done = 0
    started = time.perf_counter()
    try:
        while done < n:
            reply = await r.xreadgroup(TXN_GROUP, "baseline", {settings.txn_stream: ">"}, count=1)
            if not reply:
                break
            [[_, [(entry_id, fields)]]] = reply
            t = transaction_decoder.decode(fields[b"txn"])
            await conn.execute(
                _INSERT_ONE,
                (
                    t.txn_id,
                    t.client_id,
                    t.user_id,
                    t.amount,
                    t.currency,
                    t.merchant_type,
                    t.source_ip,
                    t.received_at_ms,
                ),
            )
            await r.xack(settings.txn_stream, TXN_GROUP, entry_id)
            done += 1
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
        await r.aclose()
    if done != n:
        raise SystemExit(f"baseline decided {done} of {n}")
    return n / elapsed


# ---- (b), (c) worker processes ---------------------------------------------------------


def acked(client: redis.Redis, settings: Settings) -> int:
    for group in client.xinfo_groups(settings.txn_stream):
        if group["name"] == TXN_GROUP.encode():
            return int(group["entries-read"] or 0) - int(group["pending"])
    return 0


def workers(settings: Settings, n: int, processes: int) -> tuple[float, float]:
    """Decided per second by ``processes`` worker processes, first ack to last ack, and
    the CPU seconds the worker processes used in all (start-up included)."""
    env = {
        **os.environ,
        **settings.to_env(),
        "FINTRACK_LOG_LEVEL": "warning",
        "FINTRACK_WORKER_HEARTBEAT_FILE": "",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fintrack", "run", "worker", "--consumer", f"bench-{i}"],
            env=env,
        )
        for i in range(processes)
    ]
    client = redis.Redis.from_url(settings.redis_url)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        first: tuple[float, int] | None = None
        while True:
            done = acked(client, settings)
            now = time.perf_counter()
            if first is None and done > 0:
                first = (now, done)
            if done >= n:
                break
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"workers stopped or timed out at {done} of {n}")
            time.sleep(0.01)
        assert first is not None
        cpu = 0.0
        for p in procs:
            times = psutil.Process(p.pid).cpu_times()
            cpu += times.user + times.system
        return (n - first[1]) / (now - first[0]), cpu
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        client.close()


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def scenario_settings(base: Settings, name: str) -> Settings:
    return Settings(
        redis_url=base.redis_url,
        database_url=base.database_url,
        key_prefix=f"{base.key_prefix}:{name}",
        insecure_open=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20_000, help="transactions per scenario")
    parser.add_argument("--users", type=int, default=1_000, help="distinct users")
    args = parser.parse_args()
    _loopback(REDIS_URL)
    _loopback(ADMIN_DATABASE_URL)
    n = args.count
    db = f"fintrack_bench_{secrets.token_hex(4)}"
    prefix = f"fintrack-bench:{secrets.token_hex(4)}"
    database_url = psycopg.conninfo.make_conninfo(ADMIN_DATABASE_URL, dbname=db)
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    client = redis.Redis.from_url(REDIS_URL)
    base = Settings(redis_url=REDIS_URL, database_url=database_url, key_prefix=prefix)
    results: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    load = os.getloadavg()[0]
    try:
        migrate(database_url)
        txns = traffic(n, args.users)
        for name, processes in (("baseline", 0), ("worker_x1", 1), ("worker_x2", 2)):
            s = scenario_settings(base, name)
            reset(s)
            prefill(client, s, txns)
            redis_before = redis_cpu(client)
            if processes == 0:
                started = time.process_time()
                results[name] = asyncio.run(baseline(s, n), loop_factory=new_event_loop)
                client_cpu = time.process_time() - started
            else:
                results[name], client_cpu = workers(s, n, processes)
            cpu[name] = {
                "client_s": round(client_cpu, 2),
                "redis_s": round(redis_cpu(client) - redis_before, 2),
            }
            if count_rows(s) != n:
                raise SystemExit(f"{name}: {count_rows(s)} rows for {n} transactions")
            print(f"{name:<10} {results[name]:>10,.0f} txn/s", file=sys.stderr)
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()
        with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )

    base_rate = results["baseline"]
    print(f"\n{'scenario':<12}{'txn/s':>12}{'x baseline':>12}")
    for name, rate in results.items():
        print(f"{name:<12}{rate:>12,.0f}{rate / base_rate:>12.1f}")
    print(
        json.dumps(
            {
                "count": n,
                "users": args.users,
                "txn_per_s": {k: round(v, 1) for k, v in results.items()},
                "ratio_to_baseline": {k: round(v / base_rate, 2) for k, v in results.items()},
                "cpu_seconds": cpu,
                "load_average_at_start": round(load, 2),
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
