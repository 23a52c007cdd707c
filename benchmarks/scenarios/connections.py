"""(6) Connection scale: the api serving load while holding thousands of idle keep-alive
connections, and one notifier process streaming to thousands of SSE clients.

Idle connections are raw sockets that each sent one ``GET /health`` and keep the
connection open. Memory per connection is the server tree's RSS delta divided by the
connections held. At the end every idle connection is asked again, to count how many the
server kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import uvloop
from redis.asyncio import Redis

from benchmarks._context import Context
from benchmarks._http import HttpConnection, get_request
from benchmarks._procs import Server
from benchmarks._report import Row, ScenarioResult
from benchmarks._sse import Crowd, deliver
from benchmarks._stats import mib
from benchmarks._wrk import run_wrk

NAME = "connections"
OPEN_CONCURRENCY = 200
SETTLE_S = 0.5
SSE_RATE = 20  # events per second streamed to the SSE crowd


async def _open_idle(port: int, count: int) -> tuple[list[HttpConnection], int]:
    semaphore = asyncio.Semaphore(OPEN_CONCURRENCY)
    request = get_request(port, "/health")
    conns: list[HttpConnection] = []
    failed = 0

    async def one() -> None:
        nonlocal failed
        async with semaphore:
            try:
                async with asyncio.timeout(10):
                    conn = await HttpConnection.open(port)
                    status, _ = await conn.request(request)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                failed += 1
                return
            if status == 200:
                conns.append(conn)
            else:
                failed += 1
                conn.close()

    await asyncio.gather(*(one() for _ in range(count)))
    return conns, failed


async def _still_served(conns: list[HttpConnection], port: int) -> int:
    semaphore = asyncio.Semaphore(OPEN_CONCURRENCY)
    request = get_request(port, "/health")

    async def one(conn: HttpConnection) -> bool:
        async with semaphore:
            try:
                async with asyncio.timeout(5):
                    status, _ = await conn.request(request)
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                return False
            return status == 200

    return sum(await asyncio.gather(*(one(c) for c in conns)))


async def _hold_and_load(ctx: Context, server: Server) -> dict[str, Any]:
    o = ctx.options
    rss_before = server.rss()
    started = time.monotonic()
    conns, failed = await _open_idle(server.port, o.idle_connections)
    open_s = time.monotonic() - started
    await asyncio.sleep(SETTLE_S)
    rss_held = server.rss()
    try:
        load = await asyncio.to_thread(
            run_wrk,
            server.base_url + "/transactions",
            duration_s=o.duration_s,
            connections=o.connections,
        )
        kept = await _still_served(conns, server.port)
    finally:
        for conn in conns:
            conn.close()
    held = len(conns)
    return {
        "idle_requested": o.idle_connections,
        "idle_held": held,
        "idle_failed": failed,
        "idle_open_s": round(open_s, 2),
        "idle_still_served_after_load": kept,
        "rss_before_mib": mib(rss_before),
        "rss_holding_mib": mib(rss_held),
        "rss_per_connection_kib": round((rss_held - rss_before) / held / 1024, 2) if held else None,
        "load": load,
    }


def _idle(ctx: Context, *, reference: bool) -> dict[str, Any]:
    with ctx.scope():
        variant = "conns-ref" if reference else "conns"
        settings = ctx.settings(variant)
        if reference:
            server = ctx.start_reference_api(settings, f"{variant}-api")
        else:
            server = ctx.start_role("api", settings, f"{variant}-api")
        # Warm the workers up first, so the RSS delta is the connections, not first use.
        run_wrk(
            server.base_url + "/transactions", duration_s=1, connections=ctx.options.connections
        )
        result: dict[str, Any] = uvloop.run(_hold_and_load(ctx, server))
        server.check_alive()
    return result


async def _stream_to_crowd(ctx: Context, server: Server, stream: str) -> dict[str, Any]:
    crowd = Crowd()
    redis = Redis.from_url(ctx.redis_url)
    rss_before = server.rss()
    try:
        await crowd.connect(server.port, ctx.options.sse_clients)
        await asyncio.sleep(SETTLE_S)
        rss_held = server.rss()
        result = await deliver(crowd, redis, stream, SSE_RATE, ctx.options.duration_s, server)
    finally:
        crowd.close()
        await redis.aclose()
    held = len(crowd.clients)
    result["rss_before_mib"] = mib(rss_before)
    result["rss_holding_mib"] = mib(rss_held)
    result["rss_per_client_kib"] = round((rss_held - rss_before) / held / 1024, 2) if held else None
    return result


def _sse(ctx: Context, *, reference: bool) -> dict[str, Any]:
    with ctx.scope():
        variant = "sse-scale-ref" if reference else "sse-scale"
        settings = dataclasses.replace(ctx.settings(variant), http_workers=1)
        if reference:
            server = ctx.start_reference_api(settings, variant, workers=1)
        else:
            server = ctx.start_role("notifier", settings, variant)
        result: dict[str, Any] = uvloop.run(_stream_to_crowd(ctx, server, settings.event_stream))
        server.check_alive()
    return result


def run(ctx: Context) -> ScenarioResult:
    o = ctx.options
    ours_idle, ref_idle = _idle(ctx, reference=False), _idle(ctx, reference=True)
    ours_sse, ref_sse = _sse(ctx, reference=False), _sse(ctx, reference=True)
    idle = f"{o.idle_connections:,} idle"
    sse = f"{o.sse_clients:,} SSE clients"
    plain = ctx.shared.get("ours_ingest")
    rows = [
        Row(NAME, f"api req/s holding {idle}", "req/s", ours_idle["load"]["req_per_s"],
            ref_idle["load"]["req_per_s"],
            "" if plain is None else f"no-idle run: {plain['req_per_s']:,.0f}"),
        Row(NAME, f"api p99 holding {idle}", "ms", ours_idle["load"]["latency_ms"]["p99"],
            ref_idle["load"]["latency_ms"]["p99"], higher_is_better=False),
        Row(NAME, "idle connections kept", "conns", ours_idle["idle_still_served_after_load"],
            ref_idle["idle_still_served_after_load"], f"{o.idle_connections:,}",
            ours_idle["idle_still_served_after_load"] == o.idle_connections),
        Row(NAME, "api memory per idle connection", "KiB", ours_idle["rss_per_connection_kib"],
            ref_idle["rss_per_connection_kib"], higher_is_better=False),
        Row(NAME, f"notifier {sse}: delivered ev/s", "ev/s", ours_sse["delivered_per_s"],
            ref_sse["delivered_per_s"], f"{o.sse_clients * SSE_RATE:,} offered",
            ours_sse["delivered_share"] >= 0.999),
        Row(NAME, "notifier delivery latency p99", "ms", ours_sse["probe_latency_ms"]["p99"],
            ref_sse["probe_latency_ms"]["p99"], higher_is_better=False),
        Row(NAME, "notifier memory per SSE client", "KiB", ours_sse["rss_per_client_kib"],
            ref_sse["rss_per_client_kib"], higher_is_better=False),
    ]  # fmt: skip
    detail = {
        "idle": {"ours": ours_idle, "reference": ref_idle},
        "sse": {"ours": ours_sse, "reference": ref_sse, "events_per_s": SSE_RATE},
    }
    return ScenarioResult(NAME, rows, detail)
