"""Open-loop load: requests sent on a fixed schedule, latency measured from the schedule.

A closed loop (wrk) waits for an answer before sending again, so a slow server also
slows the load and hides its own queueing ("coordinated omission"). Here request ``i`` is
due at ``start + i / rate`` whatever happened before; if every connection is busy it
waits, and that wait counts in its latency.

The generator shares the two cores with the servers it measures, so every CPU
microsecond it spends is taken from them: connections are bare ``asyncio.Protocol``s
(no stream reader, no task or timeout per request), every request is built before the
schedule starts, and the schedule loop writes each one straight to an idle connection.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from benchmarks._http import post_request

REQUEST_TIMEOUT_S = 10.0  # after the last send, how long answers are awaited
_MERCHANTS = ("general",) * 12 + ("grocery", "travel", "luxury_goods", "crypto", "gift_cards")
_BROKEN = -1  # the status of a request whose connection broke before it was answered


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


def response_length(buffer: bytes) -> int:
    """How many bytes of ``buffer`` the first complete HTTP response takes, or 0 if it is
    not complete yet. Content-Length or chunked bodies (our servers send nothing else)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return 0
    head = buffer[:end].lower()
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        size = end + 4 + int(head[at + 17 : stop if stop >= 0 else None])
        return size if len(buffer) >= size else 0
    if b"\r\ntransfer-encoding: chunked" in head:
        last = buffer.find(b"\r\n0\r\n\r\n", end)  # the empty last chunk
        return last + 7 if last >= 0 else 0
    return end + 4


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one request at a time; ``on_idle`` gets it back when
    its request is answered, or broken (then ``broken`` is set)."""

    def __init__(self, on_idle: Callable[[_Connection], None]) -> None:
        self.on_idle = on_idle
        self.transport: asyncio.Transport | None = None
        self.pending: Sent | None = None
        self.broken = False
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, raw: bytes, item: Sent) -> None:
        assert self.transport is not None
        self.pending = item
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        size = response_length(self._buffer)
        if not size or self.pending is None:
            return
        item, self.pending = self.pending, None
        item.answered_ns = time.time_ns()
        item.status = int(self._buffer[9:12])
        self._buffer = self._buffer[size:]
        self.on_idle(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self.pending is not None:
            item, self.pending = self.pending, None
            item.answered_ns = time.time_ns()
            item.status = _BROKEN
        self.on_idle(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_loop(
    port: int,
    *,
    rate: float,
    duration_s: float,
    connections: int = 64,
    path: str = "/transactions",
    body: Callable[[], tuple[str, bytes]] | None = None,
) -> OpenLoopResult:
    """POST ``rate`` requests per second for ``duration_s``; one ``Sent`` per request.
    A request unanswered ``REQUEST_TIMEOUT_S`` after the last send, or whose connection
    broke, has status -1; a broken connection is replaced."""
    loop = asyncio.get_running_loop()
    rng = random.Random()
    make = body or (lambda: transaction_body(rng))
    idle: collections.deque[_Connection] = collections.deque()
    freed = asyncio.Event()
    opened: list[_Connection] = []
    replacing: set[asyncio.Task[None]] = set()

    async def connect() -> None:
        _, conn = await loop.create_connection(lambda: _Connection(on_idle), "127.0.0.1", port)
        opened.append(conn)
        idle.append(conn)
        freed.set()

    def on_idle(conn: _Connection) -> None:
        if conn.broken:
            task = loop.create_task(connect())
            replacing.add(task)
            task.add_done_callback(replacing.discard)
            return
        idle.append(conn)
        freed.set()

    await asyncio.gather(*(connect() for _ in range(connections)))
    result = OpenLoopResult()
    total = int(rate * duration_s)
    interval_ns = int(1e9 / rate)
    # Every request is built before the schedule starts: building one during the run cost
    # ~20 us of the generator's ~70 us of CPU per request, taken from the servers.
    made = (make() for _ in range(total))
    requests = [(txn_id, post_request(port, path, payload)) for txn_id, payload in made]
    wall_offset = time.time_ns() - time.monotonic_ns()
    start = time.monotonic_ns() + 20_000_000
    # A full collection here pauses sending (and the SSE client's receipt times) for tens
    # of milliseconds on this machine: none while the schedule runs (refcounting still
    # frees everything that is not cyclic).
    collecting = gc.isenabled()
    gc.disable()
    try:
        for i in range(total):
            due = start + i * interval_ns
            delay = due - time.monotonic_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            txn_id, raw = requests[i]
            item = Sent(txn_id, due + wall_offset)
            result.sent.append(item)
            if not idle:
                result.late_starts += 1
                while not idle:
                    freed.clear()
                    await freed.wait()
            idle.popleft().send(raw, item)
        result.send_seconds = (time.monotonic_ns() - start) / 1e9
        deadline = time.monotonic() + REQUEST_TIMEOUT_S
        while any(c.pending is not None for c in opened) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
    finally:
        if collecting:
            gc.enable()
        for task in replacing:
            task.cancel()
        for conn in opened:
            conn.close()
    for item in result.sent:
        if item.status == 0:  # never answered
            item.status = _BROKEN
            item.answered_ns = time.time_ns()
    return result
