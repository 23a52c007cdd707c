"""Fraud worker throughput: batched workers against a one-at-a-time baseline.

    uv run python benchmarks/worker_bench.py [--count N] [--baseline-count B] [--rounds R]

Pre-fills the transactions stream (as the api enqueues them: the entry plus the user's
activity-ledger member) and measures decided transactions per second for:

  baseline   in this process: XREADGROUP COUNT 1, one autocommit INSERT, one XACK per
             transaction, no rules (the naive loop the worker is designed to beat);
  worker x1  one `fintrack run worker` process, all rules, events published and archived;
  worker x2  two such processes sharing the consumer group.

Every scenario runs ``--rounds`` times, interleaved, so that a neighbour's burst on a
shared machine hits them alike; the table gives medians. The baseline's rate does not
depend on the backlog, so it runs on fewer transactions (``--baseline-count``).

Traffic is realistic (``traffic``): most transactions are everyday payments of users seen
once or twice, a few hot accounts and the api's default user ``anonymous`` trip the
velocity rules, and most decisions are APPROVED (up to ~50 transactions per user, see
``traffic``).

Worker throughput is timed from the first acknowledged entry to the last, so process
start-up is left out; "archived/s" runs until the last event is also in PostgreSQL.
CPU per transaction is given for the client (the baseline loop, or the worker processes
including start-up), the PostgreSQL backends serving the bench database, and the Redis
server (which other users of a shared Redis inflate).

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
import statistics
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
from fintrack.core.streams import ARCHIVE_GROUP, TXN_GROUP

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

# Everyday payments dominate; a few categories are risky (see fraud.settings).
_MERCHANTS = (
    ("general",) * 60
    + ("grocery",) * 20
    + ("travel",) * 12
    + (
        "luxury_goods",
        "crypto",
        "gift_cards",
    )
)
# Currency, share, and what one unit is worth in USD (to size amounts alike everywhere).
_CURRENCIES = (("INR", 60, 0.012), ("USD", 20, 1.0), ("EUR", 10, 1.08), ("GBP", 6, 1.27))
_CURRENCIES += (("JPY", 4, 0.0067),)
HOT_USERS = 20  # a few busy accounts (merchants, aggregators)
HOT_SHARE = 0.04  # of all transactions, spread over the hot accounts
ANONYMOUS_SHARE = 0.01  # clients that send no user_id: the api's default user


def _loopback(url: str) -> None:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing a non-loopback server: {host}")


def traffic(n: int, users: int, seed: int = 42) -> list[Transaction]:
    """A realistic mix: everyday payments (log-normal, median about USD 30) from many
    users, a few hot accounts and the api's default user ``anonymous`` (velocity rules
    fire for them), 3% risky categories and 1% amounts a hundred times larger.
    With the default settings most transactions are APPROVED while users average no more
    than 50 each (the daily count limit): at 1,000 users, up to about 50,000 transactions;
    past that nearly every user's next one is flagged."""
    rng = random.Random(seed)
    now_ms = time.time_ns() // 1_000_000
    per_ms = 20  # arrival times as at 20,000 transactions per second
    codes = [c for c, _, _ in _CURRENCIES]
    weights = [w for _, w, _ in _CURRENCIES]
    usd = {c: rate for c, _, rate in _CURRENCIES}
    txns = []
    for i in range(n):
        pick = rng.random()
        if pick < ANONYMOUS_SHARE:
            user_id = "anonymous"
        elif pick < ANONYMOUS_SHARE + HOT_SHARE:
            user_id = f"hot_{rng.randrange(HOT_USERS)}"
        else:
            user_id = f"user_{rng.randrange(users)}"
        (currency,) = rng.choices(codes, weights)
        value_usd = min(rng.lognormvariate(3.4, 1.2), 50_000.0)
        if rng.random() < 0.01:
            value_usd *= 100
        places = 0 if currency == "JPY" else 2
        amount = round(Decimal(value_usd / usd[currency]), places)
        amount = max(amount, Decimal(1).scaleb(-places))
        txns.append(
            Transaction(
                txn_id=uuid.UUID(int=rng.getrandbits(128), version=4),
                user_id=user_id,
                amount=amount,
                currency=currency,
                merchant_type=rng.choice(_MERCHANTS),
                source_ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                client_id="bench",
                received_at_ms=now_ms + i // per_ms,
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


# ---- CPU accounting ---------------------------------------------------------------------


def pg_backends(database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving ``database`` (by pid)."""
    found: dict[int, float] = {}
    for proc in psutil.process_iter(["username", "cmdline"]):
        try:
            if database in " ".join(proc.info["cmdline"] or ()):
                times = proc.cpu_times()
                found[proc.pid] = times.user + times.system
        except psutil.Error:
            continue
    return found


def pg_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends alive at ``after`` used since ``before`` (new ones: all)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Measured:
    """One scenario run: its rate and the CPU seconds the client (the baseline loop or the
    worker processes), the PostgreSQL backends and Redis used meanwhile."""

    __slots__ = ("archived_rate", "client_s", "pg_s", "rate", "redis_s")

    def __init__(self) -> None:
        self.rate = 0.0
        self.archived_rate = 0.0  # decided and every event archived (workers only)
        self.client_s = 0.0
        self.pg_s = 0.0
        self.redis_s = 0.0


# ---- (a) the one-at-a-time baseline ---------------------------------------------------

_INSERT_ONE = """
INSERT INTO transactions (txn_id, client_id, user_id, amount, currency, merchant_type,
                          source_ip, status, risk_score, received_at, decided_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, 'APPROVED', 0,
        timestamptz 'epoch' + %s * interval '1 millisecond', now())
ON CONFLICT (txn_id) DO NOTHING
"""


async def baseline(settings: Settings, n: int, database: str, client: redis.Redis) -> Measured:
    """Decided per second, one entry per read, one INSERT (autocommit), one XACK each."""
    from redis.asyncio import Redis

    m = Measured()
    r = Redis.from_url(settings.redis_url)
    conn = await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True)
    done = 0
    pg_before = pg_backends(database)
    redis_before = redis_cpu(client)
    cpu_before = time.process_time()
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
        m.rate = n / (time.perf_counter() - started)
        m.client_s = time.process_time() - cpu_before
        m.redis_s = redis_cpu(client) - redis_before
        m.pg_s = pg_used(pg_before, pg_backends(database))
    finally:
        await conn.close()
        await r.aclose()
    if done != n:
        raise SystemExit(f"baseline decided {done} of {n}")
    return m


# ---- (b), (c) worker processes ---------------------------------------------------------


def _group_done(client: redis.Redis, stream: str, group: str) -> int:
    """Entries of ``stream`` that ``group`` has read and acknowledged."""
    for info in client.xinfo_groups(stream):
        if info["name"] == group.encode():
            return int(info["entries-read"] or 0) - int(info["pending"])
    return 0


def acked(client: redis.Redis, settings: Settings) -> int:
    return _group_done(client, settings.txn_stream, TXN_GROUP)


def archived_all(client: redis.Redis, settings: Settings) -> bool:
    """Every entry of the events stream read and acknowledged by the archive."""
    try:
        added = int(client.xinfo_stream(settings.event_stream)["entries-added"])
    except redis.ResponseError:
        return False
    return _group_done(client, settings.event_stream, ARCHIVE_GROUP) >= added


def workers(settings: Settings, n: int, processes: int, database: str) -> Measured:
    """Decided per second by ``processes`` worker processes, first ack to last ack (and to
    the last event archived), and the CPU they, their PostgreSQL backends and Redis used
    (the workers' start-up included)."""
    m = Measured()
    env = {
        **os.environ,
        **settings.to_env(),
        "FINTRACK_LOG_LEVEL": "warning",
        "FINTRACK_WORKER_HEARTBEAT_FILE": "",
    }
    client = redis.Redis.from_url(settings.redis_url)
    pg_before = pg_backends(database)
    redis_before = redis_cpu(client)
    spawned_at = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fintrack", "run", "worker", "--consumer", f"bench-{i}"],
            env=env,
        )
        for i in range(processes)
    ]
    try:
        deadline = time.monotonic() + TIMEOUT_S
        first: tuple[float, int] | None = None
        decided_at: float | None = None
        while True:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit(f"workers stopped or timed out at {acked(client, settings)}")
            now = time.perf_counter()
            if decided_at is None:
                done = acked(client, settings)
                if first is None and done > 0:
                    first = (now, done)
                if done >= n:
                    decided_at = now
            if decided_at is not None and archived_all(client, settings):
                break
            time.sleep(0.01)
        assert first is not None
        if decided_at == first[0]:
            # Everything was acked between two polls (a small count): time it from the
            # start instead, start-up included, rather than dividing by zero.
            first = (spawned_at, 0)
        m.rate = (n - first[1]) / (decided_at - first[0])
        m.archived_rate = (n - first[1]) / (now - first[0])
        m.pg_s = pg_used(pg_before, pg_backends(database))  # before the workers disconnect
        m.redis_s = redis_cpu(client) - redis_before
        for p in procs:
            times = psutil.Process(p.pid).cpu_times()
            m.client_s += times.user + times.system
        return m
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


def scenario_settings(base: Settings, name: str) -> Settings:
    return Settings(
        redis_url=base.redis_url,
        database_url=base.database_url,
        key_prefix=f"{base.key_prefix}:{name}",
        insecure_open=True,
        worker_batch_size=base.worker_batch_size,
    )


SCENARIOS = (("baseline", 0), ("worker_x1", 1), ("worker_x2", 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=50_000, help="transactions per worker run")
    parser.add_argument(
        "--baseline-count", type=int, default=5_000, help="transactions per baseline run"
    )
    parser.add_argument("--users", type=int, default=100_000, help="everyday users")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every scenario")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=Settings().worker_batch_size,
        help="FINTRACK_WORKER_BATCH_SIZE of the workers (default: the setting's default)",
    )
    args = parser.parse_args()
    _loopback(REDIS_URL)
    _loopback(ADMIN_DATABASE_URL)
    db = f"fintrack_bench_{secrets.token_hex(4)}"
    prefix = f"fintrack-bench:{secrets.token_hex(4)}"
    database_url = psycopg.conninfo.make_conninfo(ADMIN_DATABASE_URL, dbname=db)
    with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
    client = redis.Redis.from_url(REDIS_URL)
    base = Settings(
        redis_url=REDIS_URL,
        database_url=database_url,
        key_prefix=prefix,
        worker_batch_size=args.batch_size,
    )
    runs: dict[str, list[Measured]] = {name: [] for name, _ in SCENARIOS}
    counts = {name: args.baseline_count if p == 0 else args.count for name, p in SCENARIOS}
    load = os.getloadavg()[0]
    try:
        migrate(database_url)
        txns = traffic(max(counts.values()), args.users)
        for round_ in range(args.rounds):
            for name, processes in SCENARIOS:
                s = scenario_settings(base, f"{name}-{round_}")
                n = counts[name]
                reset(s)
                prefill(client, s, txns[:n])
                if processes == 0:
                    m = asyncio.run(baseline(s, n, db, client), loop_factory=new_event_loop)
                else:
                    m = workers(s, n, processes, db)
                if count_rows(s) != n:
                    raise SystemExit(f"{name}: {count_rows(s)} rows for {n} transactions")
                runs[name].append(m)
                print(f"round {round_ + 1} {name:<10} {m.rate:>10,.0f} txn/s", file=sys.stderr)
                _delete_keys(client, f"{s.key_prefix}:*")
    finally:
        _delete_keys(client, f"{prefix}:*")
        client.close()
        with psycopg.connect(ADMIN_DATABASE_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
    report(runs, counts, args, load)


def _delete_keys(client: redis.Redis, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def report(runs: dict[str, list[Measured]], counts: dict[str, int], args: Any, load: float) -> None:
    """A table of medians (CPU in microseconds per transaction) and a JSON line."""
    median = {name: statistics.median(m.rate for m in ms) for name, ms in runs.items()}
    base_rate = median["baseline"]
    print(
        f"\n{'scenario':<12}{'txn/s':>10}{'x baseline':>12}{'archived/s':>12}"
        f"{'client':>9}{'postgres':>10}{'redis':>8}  (CPU us/txn, medians)"
    )
    cpu: dict[str, dict[str, float]] = {}
    for name, ms in runs.items():
        n = counts[name]
        cpu[name] = {
            "client_us": round(statistics.median(m.client_s for m in ms) / n * 1e6, 1),
            "postgres_us": round(statistics.median(m.pg_s for m in ms) / n * 1e6, 1),
            "redis_us": round(statistics.median(m.redis_s for m in ms) / n * 1e6, 1),
        }
        archived = statistics.median(m.archived_rate for m in ms)
        print(
            f"{name:<12}{median[name]:>10,.0f}{median[name] / base_rate:>12.1f}"
            f"{(f'{archived:,.0f}' if archived else '-'):>12}"
            f"{cpu[name]['client_us']:>9}{cpu[name]['postgres_us']:>10}{cpu[name]['redis_us']:>8}"
        )
    print(
        json.dumps(
            {
                "counts": counts,
                "users": args.users,
                "rounds": args.rounds,
                "worker_batch_size": args.batch_size,
                "txn_per_s": {k: round(v, 1) for k, v in median.items()},
                "ratio_to_baseline": {k: round(v / base_rate, 2) for k, v in median.items()},
                "ratio_per_round": {
                    k: [
                        round(m.rate / b.rate, 2) for m, b in zip(ms, runs["baseline"], strict=True)
                    ]
                    for k, ms in runs.items()
                },
                "archived_per_s": {
                    k: round(statistics.median(m.archived_rate for m in ms), 1)
                    for k, ms in runs.items()
                    if k != "baseline"
                },
                "cpu_us_per_txn": cpu,
                "load_average_at_start": round(load, 2),
                "cores": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
