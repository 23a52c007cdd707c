"""Fan-out under load: 200 feed clients on one notifier process each get every event of a
2,000-event run, while a client that stopped reading is dropped without delaying them."""

from __future__ import annotations

import asyncio
import re
import resource
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from notify_support import admin_headers, archive_rows, decision_events, publish
from redis.asyncio import Redis

from conftest import ADMIN_TOKEN, RoleProcess, wait_until
from fintrack.config import Settings

CLIENTS = 200
EVENTS = 2_000  # one decision event per APPROVED decision
DEADLINE_S = 90.0
_ID_LINE = re.compile(rb"^id: (\d+-\d+)$", re.MULTILINE)


@pytest.fixture
def enough_fds() -> Iterator[None]:
    """Room for a few hundred sockets on each side (the server inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _stalled_client(base_url: str) -> socket.socket:
    """A feed request on a socket with a tiny receive buffer that is then never read.

    It resumes from the start of a large archived history, so its connection is full
    (server socket buffers included) before the live run starts.
    """
    url = urlsplit(base_url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((url.hostname, url.port))
    headers = admin_headers(ADMIN_TOKEN, last_event_id="0-1")
    request = "GET /events HTTP/1.1\r\nHost: {}\r\n{}\r\n\r\n".format(
        url.netloc, "\r\n".join(f"{k}: {v}" for k, v in headers.items())
    )
    sock.sendall(request.encode())
    return sock


def _metric(base_url: str, name: str) -> float:
    for line in httpx.get(base_url + "/metrics", timeout=5).text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _client(
    client: httpx.AsyncClient, connected: asyncio.Queue[None], ids: list[str]
) -> float:
    """Read the feed until EVENTS ids arrived; return when (monotonic) it completed."""
    tail = b""
    async with client.stream("GET", "/events", headers=admin_headers(ADMIN_TOKEN)) as response:
        assert response.status_code == 200
        first = True
        async for chunk in response.aiter_raw():
            if first:
                connected.put_nowait(None)
                first = False
            data = tail + chunk
            cut = data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0
            ids.extend(m.decode() for m in _ID_LINE.findall(data, 0, cut))
            tail = data[cut:]
            if len(ids) >= EVENTS:
                return time.monotonic()
    raise AssertionError(f"stream ended after {len(ids)} events")


async def test_200_clients_get_every_event_and_a_stalled_one_is_dropped(
    enough_fds: None,
    start_role: Callable[..., RoleProcess],
    settings: Settings,
    redis_client: Redis,
) -> None:
    """Every one of 200 clients receives all 2,000 events in order within the deadline; the
    client that never reads is disconnected for overflow."""
    # History for the stalled client only: ~8 MB, more than the sockets can hold.
    history = decision_events(4_000, rules=["velocity"], pad=1_500)
    base_ms = int(time.time() * 1000) - 60_000
    await archive_rows(settings, [(f"{base_ms}-{i}", e) for i, e in enumerate(history)])

    notifier = start_role(
        "notifier", settings, FINTRACK_SSE_HEARTBEAT_S="1", FINTRACK_SSE_LIFETIME_S="300"
    )
    stalled = _stalled_client(notifier.base_url)
    try:
        limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=notifier.base_url, timeout=DEADLINE_S, limits=limits
        ) as client:
            connected: asyncio.Queue[None] = asyncio.Queue()
            received: list[list[str]] = [[] for _ in range(CLIENTS)]
            tasks = [asyncio.create_task(_client(client, connected, ids)) for ids in received]
            async with asyncio.timeout(30):
                for _ in range(CLIENTS):
                    await connected.get()
            started = time.monotonic()
            ids = await publish(settings, redis_client, decision_events(EVENTS))
            async with asyncio.timeout(DEADLINE_S):
                finished = await asyncio.gather(*tasks)
        slowest = max(finished) - started
        print(f"\n{CLIENTS} clients x {EVENTS} events: all done {slowest:.2f} s after publishing")
        for got in received:
            assert got[:EVENTS] == ids
        assert slowest < DEADLINE_S

        await asyncio.to_thread(
            wait_until,
            lambda: _metric(notifier.base_url, "fintrack_notifier_clients_dropped_total") == 1,
            30,
            "the stalled client to be dropped",
        )
        # Its connection is closed: reading it now reaches the end of the stream.
        stalled.settimeout(30)
        while stalled.recv(1 << 16):
            pass
    finally:
        stalled.close()
    assert '"reason":"overflow"' in notifier.log()
