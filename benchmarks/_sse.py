"""SSE load: a crowd of feed clients, a publisher of synthetic events, and the tally.

Events are published straight onto the events stream (as a worker would, after its
commit) at a fixed rate, so the figure is the feed's fan-out alone. Every client counts
the event frames it receives; a few "probe" clients also time each frame from its stream
id (the Redis clock when it was published) to its arrival.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from redis.asyncio import Redis

from benchmarks._http import SseClient, open_sse
from benchmarks._procs import Server
from benchmarks._stats import summary_ms
from fintrack.core.events import Decision, events_for, stream_fields
from fintrack.core.models import Transaction

PROBES = 5
CONNECT_CONCURRENCY = 200


def synthetic_events(count: int) -> list[dict[bytes, bytes]]:
    """``count`` distinct APPROVED decision events (one event each), ready for XADD."""
    now_ms = time.time_ns() // 1_000_000
    out = []
    for i in range(count):
        txn = Transaction(
            txn_id=uuid.uuid4(),
            user_id=f"user_{i % 1000}",
            amount=Decimal("1250.00"),
            currency="INR",
            merchant_type="general",
            source_ip=f"10.0.{i % 250}.{i % 200 + 1}",
            client_id="bench",
            received_at_ms=now_ms,
        )
        decision = Decision(txn=txn, status="APPROVED", risk_score=0, hits=(), decided_at_ms=now_ms)
        (event,) = events_for(decision)
        out.append({k.encode(): v for k, v in stream_fields(event).items()})
    return out


@dataclass
class Crowd:
    """Connected SSE clients; probes record per-frame latency in milliseconds."""

    clients: list[SseClient] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    failed: int = 0

    def on_probe_frame(self, event_id: bytes, kind: bytes, data: bytes, now_ns: int) -> None:
        self.latencies_ms.append(now_ns / 1e6 - int(event_id.split(b"-")[0]))

    async def connect(self, port: int, count: int, path: str = "/events") -> None:
        semaphore = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(i: int) -> None:
            async with semaphore:
                probe = self.on_probe_frame if i < PROBES else None
                try:
                    self.clients.append(await open_sse(port, path, on_frame=probe))
                except (OSError, TimeoutError):
                    self.failed += 1

        await asyncio.gather(*(one(i) for i in range(count)))

    def events(self) -> list[int]:
        return [c.events for c in self.clients]

    def open_count(self) -> int:
        return sum(1 for c in self.clients if not c.closed.done())

    def close(self) -> None:
        for c in self.clients:
            c.close()


async def publish(redis: Redis, stream: str, rate: int, duration_s: float) -> int:
    """XADD ``rate`` events per second for ``duration_s`` in 10 ms ticks; return how many."""
    pool = synthetic_events(min(max(rate, 1), 1_000))
    tick_s = 0.01
    per_tick = rate * tick_s
    owed = 0.0
    sent = 0
    start = time.monotonic()
    ticks = int(duration_s / tick_s)
    for n in range(ticks):
        owed += per_tick
        batch = int(owed)
        owed -= batch
        if batch:
            async with redis.pipeline(transaction=False) as pipe:
                for k in range(batch):
                    pipe.xadd(stream, pool[(sent + k) % len(pool)])  # type: ignore[arg-type]
                await pipe.execute()
            sent += batch
        delay = start + (n + 1) * tick_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return sent


async def deliver(
    crowd: Crowd,
    redis: Redis,
    stream: str,
    rate: int,
    duration_s: float,
    server: Server,
    settle_s: float = 5.0,
) -> dict[str, Any]:
    """Publish for ``duration_s``, wait until every open client has everything (or
    ``settle_s``), and tally deliveries, completeness, probe latency and CPU use."""
    before = crowd.events()
    crowd.latencies_ms.clear()
    cpu_before = server.cpu_seconds()
    own_before = time.process_time()
    started = time.monotonic()
    published = await publish(redis, stream, rate, duration_s)
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        if all(
            c.events - b >= published
            for c, b in zip(crowd.clients, before, strict=True)
            if not c.closed.done()
        ):
            break
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    server_cpu = server.cpu_seconds() - cpu_before
    own_cpu = time.process_time() - own_before
    got = [c.events - b for c, b in zip(crowd.clients, before, strict=True)]
    delivered = sum(got)
    return {
        "clients": len(crowd.clients),
        "clients_failed_to_connect": crowd.failed,
        "clients_still_open": crowd.open_count(),
        "clients_complete": sum(1 for g in got if g >= published),
        "published": published,
        "published_per_s": round(published / duration_s, 1),
        "delivered": delivered,
        "delivered_per_s": round(delivered / duration_s, 1),
        "delivered_share": round(delivered / (published * len(got)), 4) if got else 0.0,
        "wall_s": round(elapsed, 2),
        "probe_latency_ms": summary_ms(crowd.latencies_ms),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_us_per_delivery": round(server_cpu / delivered * 1e6, 2) if delivered else None,
        "bench_cpu_s": round(own_cpu, 2),
    }
