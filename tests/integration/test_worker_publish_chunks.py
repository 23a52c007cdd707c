"""A big batch is published in several publish-and-ack calls (``PUBLISH_CHUNK``), so that
the api's hand-offs run between them instead of waiting for one long script; every entry
is still published once and acked. Real Redis and PostgreSQL, the batch processor in
process."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import redis
from enqueue import enqueue, make_txn
from redis.asyncio import Redis
from worker_checks import assert_published_once, decided, pending

from fintrack.config import Settings
from fintrack.core.db import open_pool
from fintrack.core.streams import TXN_GROUP, ensure_group
from fintrack.fraud import _scripts
from fintrack.fraud._batch import BatchProcessor
from fintrack.fraud._engines import EngineKeeper
from fintrack.fraud._entries import parse_read
from fintrack.fraud._scripts import Scripts


class CountingScripts(Scripts):
    """The real scripts, counting the entries of each publish-and-ack script call."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.calls: list[int] = []
        publish = self._publish

        async def counted(*, keys: Any, args: Any) -> Any:
            _, packed = msgspec.msgpack.decode(args[-1])  # (event fields, items)
            self.calls.append(len(packed))
            return await publish(keys=keys, args=args)

        self._publish = counted  # type: ignore[assignment]


async def test_a_big_batch_is_published_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    redis_client: Redis,
    redis_sync: redis.Redis,
) -> None:
    monkeypatch.setattr(_scripts, "PUBLISH_CHUNK", 3)
    txns = [make_txn(user_id=f"u{i % 2}", amount=f"{(i + 1) * 60_000}.00") for i in range(7)]
    enqueue(redis_sync, settings, txns)
    await ensure_group(redis_client, settings.txn_stream, TXN_GROUP, start_id="0")
    reply = await redis_client.xreadgroup(TXN_GROUP, "c1", {settings.txn_stream: ">"}, count=10)
    entries = parse_read(reply)
    assert len(entries) == 7
    scripts = CountingScripts(redis_client)
    pool = await open_pool(settings)
    try:
        stats = await BatchProcessor(
            settings,
            consumer="c1",
            redis=redis_client,
            pool=pool,
            scripts=scripts,
            engines=EngineKeeper(settings),
        ).handle(entries)
    finally:
        await pool.close()
    assert scripts.calls == [3, 3, 1]
    assert stats.acked == 7
    assert pending(redis_sync, settings) == 0
    rows = decided(settings)
    assert set(rows) == {str(t.txn_id) for t in txns}
    assert_published_once(redis_sync, settings, rows)  # alerts too: most are high-value
