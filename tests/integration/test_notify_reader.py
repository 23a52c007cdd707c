"""The feed reader survives a Redis outage: it backs off instead of spinning, reports not
ready, and resumes from its last id so connected clients miss nothing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import httpx
from notify_support import decision_events, open_feed, publish
from redis.asyncio import Redis

from conftest import ADMIN_TOKEN, RoleProcess, free_port
from fintrack.config import Settings


class _Proxy:
    """A TCP relay to Redis that the test can cut (every connection dropped) and restore."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}


@contextlib.asynccontextmanager
async def _redis_proxy(redis_url: str) -> AsyncIterator[_Proxy]:
    url = urlsplit(redis_url)
    proxy = _Proxy((url.hostname or "127.0.0.1", url.port or 6379))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


def _through(settings: Settings, proxy: _Proxy) -> Settings:
    url = urlsplit(settings.redis_url)
    proxied = urlunsplit(url._replace(netloc=f"127.0.0.1:{proxy.port}"))
    return dataclasses.replace(settings, redis_url=proxied)


def _metric(base_url: str, name: str) -> float:
    for line in httpx.get(base_url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_reader_backs_off_during_redis_outage_and_resumes_without_gaps(
    start_role: Callable[..., RoleProcess], settings: Settings, redis_client: Redis
) -> None:
    """Events published while the notifier can't reach Redis arrive, in order, afterwards."""
    async with _redis_proxy(settings.redis_url) as proxy:
        notifier = start_role("notifier", _through(settings, proxy), FINTRACK_SSE_HEARTBEAT_S="0.2")
        async with open_feed(notifier.base_url, ADMIN_TOKEN) as feed:
            await feed.read_quiet()
            before = await publish(settings, redis_client, decision_events(3))
            await feed.read_events(3)

            await proxy.cut()
            during = await publish(settings, redis_client, decision_events(5))
            async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:
                async with asyncio.timeout(20):
                    while not _metric(notifier.base_url, "fintrack_notifier_reader_errors_total"):
                        await asyncio.sleep(0.1)
                assert (await client.get("/ready")).status_code == 503
                errors = _metric(notifier.base_url, "fintrack_notifier_reader_errors_total")
                await asyncio.sleep(2)
                later = _metric(notifier.base_url, "fintrack_notifier_reader_errors_total")
                # Backing off: a handful of attempts in 2 s, not thousands.
                assert later - errors <= 10, (errors, later)
                await feed.read_quiet()  # heartbeats continue while Redis is away

                await proxy.start()
                await feed.read_events(8, timeout=30)
                after = await publish(settings, redis_client, decision_events(2))
                await feed.read_events(10)
                await feed.read_quiet()
                assert (await client.get("/ready")).status_code == 200
    assert feed.ids == before + during + after
