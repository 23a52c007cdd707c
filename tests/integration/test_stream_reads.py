"""The worker reads its streams through ``read_reply``, its XREADGROUP response callback.
Against real Redis, over RESP3 (what the worker's clients speak) and RESP2, it gives the
same entries as redis-py's own parsing, and an entry deleted while pending comes back
without fields, as the worker expects."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.fraud._entries import StreamEntry, parse_read, read_reply


@pytest.mark.parametrize("protocol", [3, 2])
async def test_one_pass_reads_match_redis_py(
    settings: Settings, redis_client: Redis, protocol: int
) -> None:
    stream = f"{settings.key_prefix}:reads:{protocol}"
    ids = [
        (await redis_client.xadd(stream, {b"txn": b"payload %d" % i, b"n": b"%d" % i})).decode()
        for i in range(5)
    ]
    for group in ("plain", "fast"):
        await redis_client.xgroup_create(stream, group, id="0")
    fast = Redis.from_url(settings.redis_url, protocol=protocol)
    fast.set_response_callback("XREADGROUP", read_reply)
    try:
        read = await fast.xreadgroup("fast", "c", {stream: ">"}, count=10)
        expected = parse_read(await redis_client.xreadgroup("plain", "c", {stream: ">"}))
        assert read == expected
        assert [e.id for e in read] == ids
        assert all(type(e) is StreamEntry for e in read)
        assert read[2].fields == {b"txn": b"payload 2", b"n": b"2"}
        assert parse_read(read) is read  # the worker's callers take it as it is

        await redis_client.xdel(stream, ids[1])
        history = await fast.xreadgroup("fast", "c", {stream: "0"}, count=10)
        assert [(e.id, e.fields) for e in history][:2] == [
            (ids[0], {b"txn": b"payload 0", b"n": b"0"}),
            (ids[1], {}),
        ]
        plain = parse_read(await redis_client.xreadgroup("plain", "c", {stream: "0"}))
        assert history == plain
        assert await fast.xreadgroup("fast", "c", {stream: ">"}, count=10) == []
    finally:
        await fast.aclose()
