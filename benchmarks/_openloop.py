"""Open-loop load: requests sent on a fixed schedule, latency measured from the schedule.

A closed loop (wrk) waits for an answer before sending again, so a slow server also
slows the load and hides its own queueing ("coordinated omission"). Here request ``i`` is
due at ``start + i / rate`` whatever happened before; if every connection is busy it
waits, and that wait counts in its latency.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks._http import HttpConnection, post_request

REQUEST_TIMEOUT_S = 10.0
_MERCHANTS = ("general",) * 12 + ("grocery", "travel", "luxury_goods", "crypto", "gift_cards")


@dataclass
class Sent:
    """What the load generator knows about one request (times are wall-clock ns)."""

    txn_id: str
    due_ns: int
    answered_ns: int = 0
    status: int = 0


@dataclass
class OpenLoopResult:
    sent: list[Sent] = field(default_factory=list)
    late_starts: int = 0  # requests that found no idle connection at their due time
    send_seconds: float = 0.0


def transaction_body(rng: random.Random, users: int = 1_000) -> tuple[str, bytes]:
    """A plausible transaction (mostly small everyday payments) with a fresh txn_id."""
    txn_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    cents = rng.randrange(100, 2_000_000)
    body = (
        f'{{"txn_id":"{txn_id}","user_id":"user_{rng.randrange(users)}",'
        f'"amount":{cents // 100}.{cents % 100:02d},"currency":"INR",'
        f'"merchant_type":"{rng.choice(_MERCHANTS)}",'
        f'"source_ip":"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"}}'
    )
    return txn_id, body.encode()


async def open_loop(
    port: int,
    *,
    rate: float,
    duration_s: float,
    connections: int = 64,
    path: str = "/transactions",
    body: Callable[[], tuple[str, bytes]] | None = None,
) -> OpenLoopResult:
    """POST ``rate`` requests per second for ``duration_s``; one ``Sent`` per request."""
    rng = random.Random()
    make = body or (lambda: transaction_body(rng))
    idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
    opened = [await HttpConnection.open(port) for _ in range(connections)]
    for conn in opened:
        idle.put_nowait(conn)
    result = OpenLoopResult()
    total = int(rate * duration_s)
    interval_ns = int(1e9 / rate)
    wall_offset = time.time_ns() - time.monotonic_ns()
    start = time.monotonic_ns() + 20_000_000
    tasks: set[asyncio.Task[None]] = set()

    async def send(conn: HttpConnection, item: Sent, raw: bytes) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                item.status, _ = await conn.request(raw)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            item.status = -1
            conn.close()
            conn = await HttpConnection.open(port)  # a broken connection is replaced
            opened.append(conn)
        finally:
            item.answered_ns = time.time_ns()
        idle.put_nowait(conn)

    try:
        for i in range(total):
            due = start + i * interval_ns
            delay = due - time.monotonic_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            txn_id, payload = make()
            item = Sent(txn_id, due + wall_offset)
            result.sent.append(item)
            if idle.empty():
                result.late_starts += 1
            conn = await idle.get()
            task = asyncio.create_task(send(conn, item, post_request(port, path, payload)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        result.send_seconds = (time.monotonic_ns() - start) / 1e9
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for conn in opened:
            conn.close()
    return result
