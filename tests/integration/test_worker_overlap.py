"""A caught-up worker reads its next batch once the one in hand is committed: that batch's
publish overlaps the next read and decision. Real Redis and PostgreSQL, the worker in
process with the first batch's publish held back until the test releases it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
from enqueue import enqueue, make_txn
from worker_checks import assert_published_once, decided, event_counts, pending

from fintrack.config import Settings
from fintrack.fraud.worker import Worker

DEADLINE_S = 10.0


async def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_the_next_batch_is_read_and_committed_while_one_publishes(
    settings: Settings, redis_sync: redis.Redis
) -> None:
    worker = Worker(dataclasses.replace(settings, worker_linger_ms=0), consumer="c1")
    await worker.start()
    batches = worker._batches
    assert batches is not None
    publish = batches._publish
    release = asyncio.Event()
    held: list[int] = []

    async def first_held(items: Sequence[Any]) -> Any:
        held.append(len(items))
        if len(held) == 1:
            await release.wait()
        return await publish(items)

    batches._publish = first_held  # type: ignore[method-assign]
    first, second = make_txn(user_id="u1"), make_txn(user_id="u2")
    loop = asyncio.create_task(worker.loop())
    try:
        enqueue(redis_sync, settings, [first])
        await _until(lambda: len(held) == 1, "the first batch's publish")
        enqueue(redis_sync, settings, [second])

        # Its publish still held, the first batch is committed but not published, and
        # the second is read, decided and committed meanwhile.
        await _until(lambda: str(second.txn_id) in decided(settings), "the second decision")
        assert str(first.txn_id) in decided(settings)
        assert (str(first.txn_id), "decision") not in event_counts(redis_sync, settings)
    finally:
        release.set()
        await _until(lambda: len(held) == 2 and pending(redis_sync, settings) == 0, "the acks")
        worker.request_stop()
        await loop
        await worker.stop()

    rows = decided(settings)
    assert set(rows) == {str(first.txn_id), str(second.txn_id)}
    assert_published_once(redis_sync, settings, rows)
