"""Replaying a long history from PostgreSQL streams it: the server's memory stays flat."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable

import httpx
import psutil
import psycopg
from notify_support import admin_headers, decision_events, open_feed
from redis.asyncio import Redis

from conftest import ADMIN_TOKEN, RoleProcess
from fintrack.config import Settings
from fintrack.core.events import event_encoder

EVENTS = 200_000
RSS_BUDGET = 50 * 1024 * 1024
_ID_LINE = re.compile(rb"^id: (\d+-\d+)$", re.MULTILINE)


def _ids(base_ms: int) -> list[str]:
    return [f"{base_ms + i // 100}-{i % 100}" for i in range(EVENTS)]


async def _archive(settings: Settings, ids: list[str]) -> str:
    """COPY EVENTS archived events (distinct txn ids); return the data of the first."""
    template = decision_events(1, status="FLAGGED", rules=["velocity"])[0]
    text = event_encoder.encode(template).decode()
    first = ""
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        async with (
            conn.cursor() as cur,
            cur.copy("COPY security_events (id_ms, id_seq, kind, txn_id, data) FROM STDIN") as copy,
        ):
            for i, entry_id in enumerate(ids):
                txn_id = str(uuid.UUID(int=i + 1))
                data = text.replace(template.txn_id, txn_id)
                first = first or data
                ms, seq = entry_id.split("-")
                await copy.write_row((ms, seq, "decision", txn_id, data))
        await conn.commit()
    return first


class _PeakRSS:
    """Samples the resident memory of a process tree in a thread until stopped."""

    def __init__(self, pid: int) -> None:
        root = psutil.Process(pid)
        self._procs = [root, *root.children(recursive=True)]
        self.baseline = self.now()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        return sum(proc.memory_info().rss for proc in self._procs)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)


async def test_replaying_200k_archived_events_keeps_rss_flat(
    start_role: Callable[..., RoleProcess], settings: Settings, redis_client: Redis
) -> None:
    """All 200,000 archived events arrive in order, and the server's RSS grows < 50 MB."""
    base_ms = int(time.time() * 1000) - 3_600_000
    ids = _ids(base_ms)
    first_data = await _archive(settings, ids)
    # As after trimming: the stream exists, remembers its last id, and holds nothing.
    await redis_client.xadd(settings.event_stream, {"kind": "decision"}, id=ids[-1])
    await redis_client.xtrim(settings.event_stream, maxlen=0, approximate=False)

    notifier = start_role("notifier", settings, FINTRACK_SSE_LIFETIME_S="600")
    # Warm up the code paths and the database connection before the baseline.
    async with open_feed(notifier.base_url, ADMIN_TOKEN, last_event_id=ids[-50]) as warm:
        await warm.read_events(49)

    received = 0
    tail = b""
    started = time.monotonic()
    with _PeakRSS(notifier.proc.pid) as rss:
        async with (
            httpx.AsyncClient(base_url=notifier.base_url, timeout=60) as client,
            client.stream("GET", "/events", headers=admin_headers(ADMIN_TOKEN, "0-0")) as feed,
        ):
            assert feed.status_code == 200
            async for chunk in feed.aiter_raw():
                data = tail + chunk
                cut = data.rfind(b"\n\n") + 2 if b"\n\n" in data else 0
                got = [m.decode() for m in _ID_LINE.findall(data, 0, cut)]
                if received == 0 and got:
                    assert b"data: " + first_data.encode() + b"\n\n" in data
                assert got == ids[received : received + len(got)]
                received += len(got)
                tail = data[cut:]
                if received == EVENTS:
                    break
    elapsed = time.monotonic() - started
    grown = rss.peak - rss.baseline
    print(f"\nreplayed {received} events in {elapsed:.1f} s; server RSS +{grown / 2**20:.1f} MB")
    assert received == EVENTS
    assert grown < RSS_BUDGET
