"""The open-loop load generator against a tiny HTTP server in the test's loop: the schedule,
statuses, latency from the due time, and a connection that breaks mid-request."""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import pytest
from benchmarks import worker_bench
from benchmarks._openloop import open_loop, response_length
from benchmarks.scenarios import e2e

_ACCEPTED = b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}"
_CHUNKED = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    ("buffer", "length"),
    [
        (_ACCEPTED, len(_ACCEPTED)),
        (_ACCEPTED[:-1], 0),  # body not all in
        (_ACCEPTED[:30], 0),  # head not all in
        (_ACCEPTED + b"HTTP/1.1 202", len(_ACCEPTED)),  # the next response's start
        (_ACCEPTED.replace(b"content-length", b"Content-Length"), len(_ACCEPTED)),
        (_CHUNKED, len(_CHUNKED)),
        (_CHUNKED[:-7], 0),  # the last chunk not in yet
    ],
)
def test_response_length(buffer: bytes, length: int) -> None:
    assert response_length(buffer) == length


async def _serve(delay_s: float, break_every: int = 0) -> tuple[asyncio.Server, int, list[int]]:
    """An HTTP server answering each POST with 202 after ``delay_s``; with ``break_every``,
    every n-th request gets its connection closed instead. Returns it, its port, and the
    number of requests it has read (in a list, updated as they come)."""
    counter = itertools.count(1)
    seen = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                seen[0] = n = next(counter)
                await asyncio.sleep(delay_s)
                if break_every and n % break_every == 0:
                    writer.close()
                    return
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_sends_on_schedule_and_measures_from_the_due_time() -> None:
    server, port, seen = await _serve(delay_s=0.02)
    async with server:
        result = await open_loop(port, rate=200, duration_s=0.5, connections=8)
    assert len(result.sent) == 100
    assert seen[0] == 100
    assert all(s.status == 202 for s in result.sent)
    dues = [s.due_ns for s in result.sent]
    assert all(b - a == 5_000_000 for a, b in itertools.pairwise(dues))  # 1 / 200 s apart
    # Each answer took at least the server's 20 ms, counted from its due time.
    assert all(s.answered_ns - s.due_ns >= 20_000_000 for s in result.sent)
    assert 0.4 < result.send_seconds < 2.0


async def test_a_busy_server_delays_starts_and_the_wait_counts() -> None:
    """One connection, answers taking 30 ms, a request due every 10 ms: most requests find
    no idle connection, and their latency includes the wait."""
    server, port, _ = await _serve(delay_s=0.03)
    async with server:
        result = await open_loop(port, rate=100, duration_s=0.3, connections=1)
    assert len(result.sent) == 30
    assert result.late_starts >= 20
    assert all(s.status == 202 for s in result.sent)
    last = result.sent[-1]
    assert last.answered_ns - last.due_ns > 0.3e9  # queued behind ~29 others x 30 ms


async def test_a_broken_connection_fails_its_request_and_is_replaced() -> None:
    server, port, seen = await _serve(delay_s=0.0, break_every=5)
    async with server:
        result = await open_loop(port, rate=200, duration_s=0.25, connections=2)
    statuses = [s.status for s in result.sent]
    assert len(statuses) == 50
    assert statuses.count(-1) == 10  # every 5th request's connection was closed
    assert statuses.count(202) == 40  # the rest went on, on replacement connections
    assert seen[0] == 50
    assert all(s.answered_ns > 0 for s in result.sent)


def test_sustained_bodies_are_the_realistic_traffic_as_a_client_sends_it() -> None:
    """Endless (chunk after chunk, no txn_id twice), amounts as exact JSON numbers, and the
    api's default user sent as no user_id."""
    bodies = list(itertools.islice(e2e.realistic_bodies(1_000, chunk=500), 1_200))
    assert len({txn_id for txn_id, _ in bodies}) == 1_200
    first = worker_bench.traffic(500, 1_000, seed=0)
    for txn, (txn_id, body) in zip(first, bodies, strict=False):
        assert txn_id == str(txn.txn_id)
        assert f'"amount":{txn.amount}'.encode() in body
        decoded = msgspec.json.decode(body)
        assert decoded.get("user_id", "anonymous") == txn.user_id
        assert ("user_id" in decoded) == (txn.user_id != "anonymous")
    assert any(b'"user_id"' not in body for _, body in bodies)
