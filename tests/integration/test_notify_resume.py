"""Resuming the feed with Last-Event-ID: from Redis, from the PostgreSQL archive, then
live — every later event exactly once, in stream order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest
from notify_support import decision_events, open_feed, publish
from redis.asyncio import Redis

from conftest import ADMIN_TOKEN, RoleProcess, wait_until
from fintrack.config import Settings
from fintrack.core.events import event_encoder, stream_fields

FAST = {"FINTRACK_SSE_HEARTBEAT_S": "0.2"}


@pytest.fixture
def notifier(start_role: Callable[..., RoleProcess], settings: Settings) -> RoleProcess:
    return start_role("notifier", settings, **FAST)


async def _stream_ids(redis: Redis, settings: Settings, after: str) -> list[str]:
    entries = await redis.xrange(settings.event_stream, "(" + after, "+")
    return [entry_id.decode() for entry_id, _ in entries]


async def _publish_concurrently(settings: Settings, publishers: int, each: int) -> None:
    """``publishers`` clients XADD ``each`` events one by one, all at the same time."""

    async def one() -> None:
        redis = Redis.from_url(settings.redis_url)
        try:
            for event in decision_events(each // 2, status="FLAGGED"):
                await redis.xadd(settings.event_stream, stream_fields(event))  # type: ignore[arg-type]
        finally:
            await redis.aclose()

    await asyncio.gather(*(one() for _ in range(publishers)))


async def test_resume_after_disconnect_gets_each_later_event_once(
    notifier: RoleProcess, settings: Settings, redis_client: Redis
) -> None:
    """Reconnecting with Last-Event-ID while 3 publishers write gives every later event once."""
    first = await publish(settings, redis_client, decision_events(10))
    async with open_feed(notifier.base_url, ADMIN_TOKEN, last_event_id="0-0") as feed:
        got = await feed.read_events(5)
    resume_from = got[4].id
    assert [e.id for e in got[:5]] == first[:5]

    publishing = asyncio.create_task(_publish_concurrently(settings, publishers=3, each=200))
    # Reconnect while they write: history and live feed meet somewhere in the middle.
    await asyncio.sleep(0.05)
    async with open_feed(notifier.base_url, ADMIN_TOKEN, last_event_id=resume_from) as feed:
        await publishing
        expected = await _stream_ids(redis_client, settings, resume_from)
        assert len(expected) == 5 + 600
        await feed.read_events(len(expected), timeout=30)
        await feed.read_quiet()  # anything extra (a duplicate) would show up by now
    assert feed.ids == expected


async def test_resume_from_archive_then_redis_then_live(
    notifier: RoleProcess, settings: Settings, redis_client: Redis
) -> None:
    """Ids older than the stream's retention come from PostgreSQL, then Redis, then live."""
    events = decision_events(300)
    ids = await publish(settings, redis_client, events, archive=True)
    # Keep only the newest 100 in Redis, as the workers' trimming would.
    await redis_client.xtrim(settings.event_stream, minid=ids[200], approximate=False)
    assert await redis_client.xlen(settings.event_stream) == 100

    async with open_feed(notifier.base_url, ADMIN_TOKEN, last_event_id=ids[49]) as feed:
        await feed.read_events(250)
        live_events = decision_events(20)
        live = await publish(settings, redis_client, live_events)
        await feed.read_events(270)
        await feed.read_quiet()
    assert feed.ids == ids[50:] + live
    sent = [event_encoder.encode(e).decode() for e in events[50:] + live_events]
    assert [e.data for e in feed.events] == sent
    assert {e.event for e in feed.events} == {"decision"}


async def test_resume_when_redis_holds_nothing_serves_the_archive(
    notifier: RoleProcess, settings: Settings, redis_client: Redis
) -> None:
    """With the whole stream trimmed away, the archive alone serves the history."""
    ids = await publish(settings, redis_client, decision_events(120), archive=True)
    await redis_client.xtrim(settings.event_stream, maxlen=0, approximate=False)
    async with open_feed(notifier.base_url, ADMIN_TOKEN, last_event_id="0-1") as feed:
        await feed.read_events(120)
        live = await publish(settings, redis_client, decision_events(3))
        await feed.read_events(123)
        await feed.read_quiet()
    assert feed.ids == ids + live


async def test_an_unreadable_archived_event_is_skipped_on_replay(
    notifier: RoleProcess, settings: Settings, redis_client: Redis
) -> None:
    """A damaged archive row is logged and left out; the replay goes on past it."""
    ids = await publish(settings, redis_client, decision_events(20), archive=True)
    await redis_client.xtrim(settings.event_stream, maxlen=0, approximate=False)
    ms, seq = (int(part) for part in ids[7].split("-"))
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        await conn.execute(
            "UPDATE security_events SET data = 'not json' WHERE (id_ms, id_seq) = (%s, %s)",
            (ms, seq),
        )
    async with open_feed(notifier.base_url, ADMIN_TOKEN, last_event_id="0-1") as feed:
        await feed.read_events(19)
        await feed.read_quiet()
    assert feed.ids == ids[:7] + ids[8:]
    wait_until(lambda: "unreadable archived event skipped" in notifier.log(), 10, "the skip logged")
    assert ids[7] in notifier.log()


async def test_no_last_event_id_means_live_only(
    notifier: RoleProcess, settings: Settings, redis_client: Redis
) -> None:
    """A fresh connection gets only events published after it, none of the history."""
    await publish(settings, redis_client, decision_events(5), archive=True)
    async with open_feed(notifier.base_url, ADMIN_TOKEN) as feed:
        await feed.read_quiet()
        live = await publish(settings, redis_client, decision_events(3))
        await feed.read_events(3)
        await feed.read_quiet()
    assert feed.ids == live
