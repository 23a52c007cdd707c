"""(4) End to end at fixed offered rates (open loop), measured from the scheduled send.

Ours: api + one worker + one notifier, one process each (the api's count:
``--e2e-api-workers``). For each transaction the bench records when it was due, when the
202 came, and from one SSE client on the notifier when its ``decision`` event arrived
and that event's stream id (Redis clock at publish time, which the worker does only after
the commit). PostgreSQL gives ``decided_at`` (stamped just before the commit) and
``received_at`` (the api's clock). So, per transaction:

- submit → 202:               answered - due
- submit → commit:            decided_at - due  (lower bound; the reference's is the same)
- submit → commit published:  event id ms - due (upper bound of the commit, 1 ms grain)
- submit → SSE:               SSE receipt - due

Reference: its api (as many processes as ours) + its one-at-a-time worker; no events, so
only the first two.
The first ``warmup`` seconds of each run are sent but not counted.

The fixed rates run for ``--duration`` with a hard traffic: 1,000 users (three payments
a second each at 3,000/s), so that as the windows fill most transactions trip the
velocity rules (rule hits to store, longer events). Then the *sustained* run, which the stretch
target is for: ``--sustained-rate`` for ``--sustained-s`` (60 s) with the worker
benchmark's realistic mix (``worker_bench.traffic``: everyday payments of
``--sustained-users`` users, a few hot accounts, the default user), long enough for the
tables, ledgers and caches to grow. It has no reference run: the target is absolute, and
the reference falls behind at that rate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import psycopg
import redis
import uvloop

from benchmarks import worker_bench
from benchmarks._context import Context
from benchmarks._http import SseClient, open_sse
from benchmarks._openloop import OpenLoopResult, open_loop
from benchmarks._procs import START_TIMEOUT_S, BenchError, Server, wait_for
from benchmarks._report import Row, ScenarioResult
from benchmarks._stats import summary_ms
from benchmarks.reference.worker import CONSUMER as REFERENCE_CONSUMER
from benchmarks.reference.worker import GROUP as REFERENCE_GROUP
from fintrack.core.models import Transaction
from fintrack.core.streams import TXN_GROUP

NAME = "e2e"
TARGET_RATE = 1_000
TARGET_COMMIT_P99_MS = 20.0
TARGET_SSE_P99_MS = 50.0
STRETCH_RATE = 3_000  # the stretch target: sustained, p99 submit -> commit <= 35 ms
STRETCH_COMMIT_P99_MS = 35.0
SETTLE_S = 15.0  # after the last send, how long decisions may take to arrive
_json = msgspec.json.Encoder(decimal_format="number")  # amounts as exact JSON numbers


def _warmup(duration_s: float) -> float:
    return min(1.0, max(0.3, duration_s / 10))


def _rows_by_txn(database_url: str) -> dict[str, tuple[float, float]]:
    """txn_id → (received_at, decided_at) in epoch milliseconds (µs precision)."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT txn_id::text, extract(epoch FROM received_at) * 1000,"
            " extract(epoch FROM decided_at) * 1000 FROM transactions"
        ).fetchall()
    return {r[0]: (float(r[1]), float(r[2])) for r in rows}


def _wait_consumer(ctx: Context, stream: str, group: str, consumer: str) -> None:
    """Wait until ``consumer`` has read from ``stream`` once: the worker is up and polling,
    so its start-up is not counted as latency."""
    client = redis.Redis.from_url(ctx.redis_url)

    def registered() -> bool:
        try:
            consumers = client.xinfo_consumers(stream, group)
        except redis.ResponseError:  # no stream or group yet
            return False
        return any(c["name"] == consumer.encode() for c in consumers)

    try:
        wait_for(registered, START_TIMEOUT_S, f"consumer {consumer} on {stream}")
    finally:
        client.close()


def _count_rows(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM transactions").fetchone()
    return int(row[0]) if row else 0


def _latencies(
    rate: int,
    load: OpenLoopResult,
    db: dict[str, tuple[float, float]],
    sse: dict[str, tuple[int, int]] | None,
    skip_before_ns: int,
) -> dict[str, Any]:
    counted = [s for s in load.sent if s.due_ns >= skip_before_ns]
    accepted = [s for s in counted if s.status == 202]
    ack = [(s.answered_ns - s.due_ns) / 1e6 for s in counted]
    commit, server = [], []
    published, via_sse = [], []
    for s in accepted:
        row = db.get(s.txn_id)
        commit.append(row[1] - s.due_ns / 1e6 if row else math.inf)
        if row:
            server.append(row[1] - row[0])
        if sse is not None:
            got = sse.get(s.txn_id)
            published.append(got[1] - s.due_ns / 1e6 if got else math.inf)
            via_sse.append((got[0] - s.due_ns) / 1e6 if got else math.inf)
    # p99 per second of the run: shows warm-up effects and hiccups (GC, checkpoints).
    by_second: dict[int, list[float]] = {}
    for s, value in zip(accepted, commit, strict=True):
        by_second.setdefault((s.due_ns - skip_before_ns) // 1_000_000_000, []).append(value)
    out: dict[str, Any] = {
        "sent": len(counted),
        "accepted": len(accepted),
        "decided": sum(1 for s in accepted if s.txn_id in db),
        "decided_per_s": round(sum(1 for s in accepted if s.txn_id in db) * rate / len(counted), 1)
        if counted
        else 0.0,
        "late_starts": load.late_starts,
        "submit_to_202_ms": summary_ms(ack),
        "submit_to_commit_ms": summary_ms(commit),
        "received_to_decided_ms": summary_ms(server),
        "submit_to_commit_p99_ms_by_second": [
            summary_ms(v)["p99"] for _, v in sorted(by_second.items())
        ],
    }
    if sse is not None:
        out["submit_to_commit_published_ms"] = summary_ms(published)
        out["submit_to_sse_ms"] = summary_ms(via_sse)
        out["sse_received"] = sum(1 for s in accepted if s.txn_id in sse)
    return out


async def _drive_ours(
    api: Server,
    notifier: Server,
    rate: int,
    duration_s: float,
    body: Callable[[], tuple[str, bytes]] | None,
) -> dict[str, Any]:
    seen: dict[str, tuple[int, int]] = {}  # txn_id → (SSE receipt ns, event id ms)

    def on_frame(event_id: bytes, kind: bytes, data: bytes, now_ns: int) -> None:
        if kind != b"decision":
            return
        at = data.find(b'"txn_id":"')
        if at >= 0:
            txn_id = data[at + 10 : at + 46].decode()
            seen.setdefault(txn_id, (now_ns, int(event_id.split(b"-")[0])))

    client: SseClient = await open_sse(notifier.port, on_frame=on_frame)
    started = time.monotonic()
    try:
        warm = _warmup(duration_s)
        load = await open_loop(api.port, rate=rate, duration_s=duration_s + warm, body=body)
        wanted = {s.txn_id for s in load.sent if s.status == 202}
        deadline = time.monotonic() + SETTLE_S
        while not wanted <= seen.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    finally:
        client.close()
    return {
        "load": load,
        "sse": seen,
        "skip_before_ns": load.sent[0].due_ns + int(warm * 1e9),
        "wall_s": time.monotonic() - started,
    }


async def _drive_reference(ctx: Context, api: Server, database_url: str, rate: int) -> Any:
    warm = _warmup(ctx.options.duration_s)
    load = await open_loop(api.port, rate=rate, duration_s=ctx.options.duration_s + warm)
    accepted = sum(1 for s in load.sent if s.status == 202)
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_count_rows, database_url) >= accepted:
            break
        await asyncio.sleep(0.2)
    return {"load": load, "skip_before_ns": load.sent[0].due_ns + int(warm * 1e9)}


def _ours(
    ctx: Context,
    rate: int,
    *,
    name: str,
    duration_s: float,
    body: Callable[[], tuple[str, bytes]] | None = None,
) -> dict[str, Any]:
    with ctx.scope():
        settings = ctx.settings(name)
        api = ctx.start_role(
            "api",
            dataclasses.replace(settings, http_workers=ctx.options.e2e_api_workers),
            f"{name}-api",
        )
        worker = ctx.start_role("worker", settings, f"{name}-worker", "--consumer", "bench-e2e")
        _wait_consumer(ctx, settings.txn_stream, TXN_GROUP, "bench-e2e")
        notifier = ctx.start_role(
            "notifier", dataclasses.replace(settings, http_workers=1), f"{name}-notifier"
        )
        roles = {"api": api, "worker": worker, "notifier": notifier}
        before = _cpu(ctx, settings.database_url, roles)
        driven = uvloop.run(_drive_ours(api, notifier, rate, duration_s, body))
        used = {
            name: after - before[name]
            for name, after in _cpu(ctx, settings.database_url, roles).items()
        }
        db = _rows_by_txn(settings.database_url)
    out = _latencies(rate, driven["load"], db, driven["sse"], driven["skip_before_ns"])
    # Where the two cores went (CPU seconds per second of the run, warm-up included):
    # with everything on one box, queueing anywhere shows up in every latency.
    wall = driven["wall_s"]
    out["cpu_cores_used"] = {name: round(seconds / wall, 3) for name, seconds in used.items()}
    return out


def _cpu(ctx: Context, database_url: str, roles: dict[str, Server]) -> dict[str, float]:
    """CPU seconds so far of each role's process tree, of this process (the load generator
    and the SSE client), of Redis and of the PostgreSQL backends serving the database."""
    own = os.times()
    database = str(psycopg.conninfo.conninfo_to_dict(database_url)["dbname"])
    with redis.Redis.from_url(ctx.redis_url) as client:
        redis_s = worker_bench.redis_cpu(client)
    return {
        **{name: server.cpu_seconds() for name, server in roles.items()},
        "load generator and SSE client": own.user + own.system,
        "redis": redis_s,
        "postgres": sum(worker_bench.pg_backends(database).values()),
    }


def _reference(ctx: Context, rate: int) -> dict[str, Any]:
    with ctx.scope():
        settings = ctx.settings(f"e2e-{rate}-ref")
        api = ctx.start_reference_api(
            settings, f"e2e-{rate}-reference", workers=ctx.options.e2e_api_workers
        )
        ctx.start_reference_worker(settings, f"e2e-{rate}-reference-worker")
        _wait_consumer(ctx, settings.txn_stream, REFERENCE_GROUP, REFERENCE_CONSUMER)
        driven = uvloop.run(_drive_reference(ctx, api, settings.database_url, rate))
        db = _rows_by_txn(settings.database_url)
    return _latencies(rate, driven["load"], db, None, driven["skip_before_ns"])


def run(ctx: Context) -> ScenarioResult:
    rows: list[Row] = []
    detail: dict[str, Any] = {}
    o = ctx.options
    for rate in o.e2e_rates:
        ours = _ours(ctx, rate, name=f"e2e-{rate}", duration_s=o.duration_s)
        ref = _reference(ctx, rate)
        if ours["accepted"] == 0:
            raise BenchError(f"no transaction accepted at {rate}/s")
        detail[f"{rate}_per_s"] = {"ours": ours, "reference": ref}
        rows += rate_rows(rate, ours, ref)
    if o.sustained_s > 0:
        bodies = realistic_bodies(o.sustained_users)
        ours = _ours(
            ctx, o.sustained_rate, name="e2e-sustained", duration_s=o.sustained_s,
            body=lambda: next(bodies),
        )  # fmt: skip
        if ours["accepted"] == 0:
            raise BenchError(f"no transaction accepted at {o.sustained_rate}/s sustained")
        detail["sustained"] = {
            "rate": o.sustained_rate, "seconds": o.sustained_s, "users": o.sustained_users,
            "ours": ours,
        }  # fmt: skip
        rows += sustained_rows(o.sustained_rate, o.sustained_s, o.sustained_users, ours)
    return ScenarioResult(NAME, rows, detail)


def realistic_bodies(users: int, chunk: int = 10_000) -> Iterator[tuple[str, bytes]]:
    """Request bodies of ``worker_bench.traffic`` (endless, made ``chunk`` at a time): the
    api's default user is sent as no ``user_id``, as a client without one would."""
    for seed in itertools.count():
        for txn in worker_bench.traffic(chunk, users, seed=seed):
            yield str(txn.txn_id), request_body(txn)


def request_body(txn: Transaction) -> bytes:
    """The JSON a client would POST for ``txn``."""
    fields: dict[str, object] = {
        "txn_id": txn.txn_id, "amount": txn.amount, "currency": txn.currency,
        "merchant_type": txn.merchant_type, "source_ip": txn.source_ip,
    }  # fmt: skip
    if txn.user_id != "anonymous":
        fields["user_id"] = txn.user_id
    return _json.encode(fields)


def rate_rows(rate: int, ours: dict[str, Any], ref: dict[str, Any]) -> list[Row]:
    """The report's rows for one offered rate, with the issue's targets at 1,000/s (the
    stretch is judged on the sustained run, ``sustained_rows``)."""
    commit_limit = TARGET_COMMIT_P99_MS if rate == TARGET_RATE else None
    sse_limit = TARGET_SSE_P99_MS if rate == TARGET_RATE else None
    commit_p99 = ours["submit_to_commit_published_ms"]["p99"]
    sse_p99 = ours["submit_to_sse_ms"]["p99"]
    return [
        Row(NAME, f"{rate}/s offered: decided txn/s", "txn/s", ours["decided_per_s"],
            ref["decided_per_s"]),
        Row(NAME, f"{rate}/s submit->202 p99", "ms", ours["submit_to_202_ms"]["p99"],
            ref["submit_to_202_ms"]["p99"], higher_is_better=False),
        Row(NAME, f"{rate}/s submit->commit p50", "ms", ours["submit_to_commit_ms"]["p50"],
            ref["submit_to_commit_ms"]["p50"], higher_is_better=False),
        Row(NAME, f"{rate}/s submit->commit p99", "ms", ours["submit_to_commit_ms"]["p99"],
            ref["submit_to_commit_ms"]["p99"], higher_is_better=False),
        Row(NAME, f"{rate}/s submit->commit published p99", "ms", commit_p99, None,
            "" if commit_limit is None else f"<= {commit_limit:g}",
            None if commit_limit is None else commit_p99 <= commit_limit,
            higher_is_better=False),
        Row(NAME, f"{rate}/s submit->SSE p99", "ms", sse_p99, None,
            "" if sse_limit is None else f"<= {sse_limit:g}",
            None if sse_limit is None else sse_p99 <= sse_limit, higher_is_better=False),
    ]  # fmt: skip


def sustained_rows(rate: int, seconds: float, users: int, ours: dict[str, Any]) -> list[Row]:
    """The sustained run's rows; at 3,000/s p99 submit -> commit published is the stretch
    target's figure. The worst second shows whether the run drifted."""
    at = f"{rate}/s sustained {seconds:g} s, {users:,} users:"
    limit = STRETCH_COMMIT_P99_MS if rate == STRETCH_RATE else None
    published = ours["submit_to_commit_published_ms"]["p99"]
    by_second = ours["submit_to_commit_p99_ms_by_second"]
    return [
        Row(NAME, f"{at} decided txn/s", "txn/s", ours["decided_per_s"], None),
        Row(NAME, f"{at} submit->202 p99", "ms", ours["submit_to_202_ms"]["p99"], None,
            higher_is_better=False),
        Row(NAME, f"{at} submit->commit p99", "ms", ours["submit_to_commit_ms"]["p99"], None,
            higher_is_better=False),
        Row(NAME, f"{at} submit->commit published p99", "ms", published, None,
            "" if limit is None else f"<= {limit:g} (stretch)",
            None if limit is None else published <= limit, higher_is_better=False),
        Row(NAME, f"{at} submit->SSE p99", "ms", ours["submit_to_sse_ms"]["p99"], None,
            higher_is_better=False),
        Row(NAME, f"{at} worst second's submit->commit p99", "ms",
            max(by_second, default=math.inf), None, higher_is_better=False),
    ]  # fmt: skip
