"""(1) Ingest: single POST /transactions at fixed concurrency (wrk, closed loop).

Ours: ``fintrack run api`` with FINTRACK_HTTP_WORKERS processes. Reference: FastAPI +
pydantic + one XADD per request under uvicorn with as many workers. Same bodies (unique
txn_ids), same concurrency, same duration, one after the other.
"""

from __future__ import annotations

from typing import Any

import redis

from benchmarks import worker_bench
from benchmarks._context import Context
from benchmarks._procs import Server
from benchmarks._report import Row, ScenarioResult
from benchmarks._wrk import run_wrk

NAME = "ingest"


def warmup_s(ctx: Context) -> float:
    """Seconds of unmeasured load first (none for smoke-test runs of a second or so)."""
    if ctx.options.duration_s < 2:
        return 0.0
    return min(2.0, max(1.0, ctx.options.duration_s / 5))


def measure_post(ctx: Context, server: Server, *, batch_items: int = 0) -> dict[str, Any]:
    """Warm up, then one measured wrk run; the server's and Redis's CPU time too."""
    o = ctx.options
    path = "/transactions/batch" if batch_items else "/transactions"
    connections = o.batch_connections if batch_items else o.connections
    if warmup_s(ctx):
        run_wrk(
            server.base_url + path,
            duration_s=warmup_s(ctx),
            connections=connections,
            batch_items=batch_items,
        )
    cpu_before = server.cpu_seconds()
    redis_before = _redis_cpu(ctx)
    result = run_wrk(
        server.base_url + path,
        duration_s=o.duration_s,
        connections=connections,
        batch_items=batch_items,
    )
    server.check_alive()
    cpu = server.cpu_seconds() - cpu_before
    redis_cpu = _redis_cpu(ctx) - redis_before
    result["server_cpu_s"] = round(cpu, 2)
    done = result["requests"] * max(batch_items, 1)
    result["server_cpu_us_per_txn"] = round(cpu / done * 1e6, 1) if done else None
    # Redis shares the cores: with batches its scripts cost about as much as the api.
    result["redis_cpu_us_per_txn"] = round(redis_cpu / done * 1e6, 1) if done else None
    return result


def _redis_cpu(ctx: Context) -> float:
    client = redis.Redis.from_url(ctx.redis_url)
    try:
        return worker_bench.redis_cpu(client)
    finally:
        client.close()


def stream_length(ctx: Context, stream: str) -> int:
    client = redis.Redis.from_url(ctx.redis_url)
    try:
        return int(client.xlen(stream))
    finally:
        client.close()


def reference_ingest(ctx: Context) -> dict[str, Any]:
    """The reference's single-POST figures, measured once per invocation."""
    cached = ctx.shared.get("reference_ingest")
    if cached is None:
        with ctx.scope():
            settings = ctx.settings("ingest-ref")
            server = ctx.start_reference_api(settings, "ingest-reference")
            cached = measure_post(ctx, server)
            cached["enqueued"] = stream_length(ctx, settings.txn_stream)
        ctx.shared["reference_ingest"] = cached
    return dict(cached)


def run(ctx: Context) -> ScenarioResult:
    o = ctx.options
    with ctx.scope():
        settings = ctx.settings("ingest")
        api = ctx.start_role("api", settings, "ingest-api")
        ours = measure_post(ctx, api)
        ours["enqueued"] = stream_length(ctx, settings.txn_stream)
    ctx.shared["ours_ingest"] = ours
    ref = reference_ingest(ctx)
    rate_ok = ours["req_per_s"] >= 2 * ref["req_per_s"] and ours["errors"] == 0
    p99_ok = ours["latency_ms"]["p99"] < ref["latency_ms"]["p99"]
    rows = [
        Row(NAME, f"req/s, {o.connections} conns", "req/s", ours["req_per_s"], ref["req_per_s"],
            ">= 2x ref", rate_ok),
        Row(NAME, "latency p50", "ms", ours["latency_ms"]["p50"], ref["latency_ms"]["p50"],
            higher_is_better=False),
        Row(NAME, "latency p95", "ms", ours["latency_ms"]["p95"], ref["latency_ms"]["p95"],
            higher_is_better=False),
        Row(NAME, "latency p99", "ms", ours["latency_ms"]["p99"], ref["latency_ms"]["p99"],
            "< ref", p99_ok, higher_is_better=False),
        Row(NAME, "server CPU per request", "us", ours["server_cpu_us_per_txn"],
            ref["server_cpu_us_per_txn"], higher_is_better=False),
    ]  # fmt: skip
    return ScenarioResult(NAME, rows, {"ours": ours, "reference": ref})
