"""(5) SSE fan-out: N feed clients on one notifier process × events per second.

Ours: ``fintrack run notifier`` (one process: one events-stream reader fanning out to
every client). Reference: an SSE endpoint in the reference app (one uvicorn worker) where
each client runs its own blocking XREAD.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import uvloop
from redis.asyncio import Redis

from benchmarks._context import Context
from benchmarks._procs import Server
from benchmarks._report import Row, ScenarioResult
from benchmarks._sse import Crowd, deliver

NAME = "fanout"


async def _drive(ctx: Context, server: Server, stream: str, clients: int, rate: int) -> Any:
    crowd = Crowd()
    redis = Redis.from_url(ctx.redis_url)
    try:
        await crowd.connect(server.port, clients)
        return await deliver(crowd, redis, stream, rate, ctx.options.duration_s, server)
    finally:
        crowd.close()
        await redis.aclose()


def measure(
    ctx: Context, variant: str, clients: int, rate: int, *, reference: bool
) -> dict[str, Any]:
    """One notifier (or reference) process, ``clients`` feeds, ``rate`` events/s."""
    with ctx.scope():
        settings = dataclasses.replace(ctx.settings(variant), http_workers=1)
        if reference:
            server = ctx.start_reference_api(settings, variant, workers=1)
        else:
            server = ctx.start_role("notifier", settings, variant)
        result: dict[str, Any] = uvloop.run(
            _drive(ctx, server, settings.event_stream, clients, rate)
        )
        server.check_alive()
    return result


def run(ctx: Context) -> ScenarioResult:
    o = ctx.options
    n, rate = o.fanout_clients, o.fanout_rate
    ours = measure(ctx, "fanout", n, rate, reference=False)
    ref = measure(ctx, "fanout-ref", n, rate, reference=True)
    label = f"{n} clients x {rate} ev/s"
    rows = [
        Row(NAME, f"delivered ev/s, {label}", "ev/s", ours["delivered_per_s"],
            ref["delivered_per_s"], f"{n * rate:,} offered",
            ours["delivered_share"] >= 0.999),
        Row(NAME, "delivery latency p50", "ms", ours["probe_latency_ms"]["p50"],
            ref["probe_latency_ms"]["p50"], higher_is_better=False),
        Row(NAME, "delivery latency p99", "ms", ours["probe_latency_ms"]["p99"],
            ref["probe_latency_ms"]["p99"], higher_is_better=False),
    ]  # fmt: skip
    return ScenarioResult(NAME, rows, {"ours": ours, "reference": ref})
