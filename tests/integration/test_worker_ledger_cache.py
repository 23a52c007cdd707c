"""The worker's ledger cache: batches that read only what was added since give the very
figures a full read gives, and a ledger that changed below the held score is read again."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import redis
from enqueue import enqueue, make_txn
from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.core.activity import activity_key, entry_score
from fintrack.fraud import _history, _scripts
from fintrack.fraud._history import Histories, LedgerCache, facts_for, fetch_histories
from fintrack.fraud._scripts import LedgerReply, Scripts
from fintrack.fraud.facts import Facts
from fintrack.fraud.settings import RuleSettings

RULES = RuleSettings()


class _Counting(Scripts):
    """Counts the ledgers read the short way (only what was added since)."""

    short = 0

    async def read_ledgers(self, *args: object, **kwargs: object) -> LedgerReply:
        reply = await super().read_ledgers(*args, **kwargs)  # type: ignore[arg-type]
        self.short += len(reply.short)
        return reply


def _facts(histories: Histories, batch: list[tuple[str, int]]) -> list[Facts | ValueError]:
    return [facts_for(histories, user, score, RULES) for user, score in batch]


async def _compare(
    scripts: Scripts,
    redis_client: Redis,
    settings: Settings,
    cache: LedgerCache,
    batches: list[list[tuple[str, int]]],
) -> None:
    """Each batch (concurrently, as the worker's batches in flight) with the cache and
    without: the same facts for every transaction."""

    async def one(batch: list[tuple[str, int]]) -> None:
        cached = await fetch_histories(scripts, redis_client, settings, RULES, batch, cache)
        full = await fetch_histories(scripts, redis_client, settings, RULES, batch)
        assert _facts(cached, batch) == _facts(full, batch)

    await asyncio.gather(*(one(b) for b in batches))


async def test_cached_ledgers_give_the_figures_of_a_full_read(
    settings: Settings, redis_sync: redis.Redis, redis_client: Redis
) -> None:
    """Batches in order, in flight together, out of order and after a trimmed ledger: the
    figures with the cache are those of a full read, for busy and quiet users alike."""
    rng = random.Random(7)
    users = [f"u{i}" for i in range(12)]
    currencies = ("INR", "USD", "EUR", "XOF")  # XOF: no rate, counted as unpriced
    txns = [
        make_txn(
            user_id=rng.choice(users),
            amount=f"{rng.randrange(1, 50_000)}.{rng.randrange(100):02d}",
            currency=rng.choice(currencies),
        )
        for _ in range(1_200)
    ]
    ids = enqueue(redis_sync, settings, txns)
    batch = [(t.user_id, entry_score(i)) for t, i in zip(txns, ids, strict=True)]
    scripts = _Counting(redis_client)
    cache = LedgerCache(min_entries=2)
    size = 50
    chunks = [batch[k : k + size] for k in range(0, len(batch), size)]
    for k in range(0, 8, 2):  # two batches in flight at once
        await _compare(scripts, redis_client, settings, cache, chunks[k : k + 2])
    await _compare(scripts, redis_client, settings, cache, [chunks[1], chunks[3]])  # redelivered
    # A ledger that lost members below the held score: the check fails, it is read again.
    redis_sync.zremrangebyrank(activity_key(settings, "u3"), 0, 2)
    await _compare(scripts, redis_client, settings, cache, chunks[8:12])
    await _compare(scripts, redis_client, settings, cache, chunks[12:])
    tiny = LedgerCache(budget=40, min_entries=2)  # constant eviction
    await _compare(scripts, redis_client, settings, tiny, chunks[:6])
    await _compare(scripts, redis_client, settings, tiny, chunks[6:])
    assert scripts.short > 100  # the cache was used


async def test_a_busy_users_held_ledger_gives_the_capped_figures(
    settings: Settings, redis_sync: redis.Redis, redis_client: Redis, monkeypatch: Any
) -> None:
    """A user past the cap is held from its newest entries on (and trimmed as it grows):
    exact counts and capped sums are those of a full capped read, batch after batch."""
    monkeypatch.setattr(_history, "SUM_CAP", 40)
    monkeypatch.setattr(_history, "COMPACT_MIN", 16)
    rng = random.Random(11)
    txns = [
        make_txn(
            user_id="busy" if rng.random() < 0.7 else rng.choice(("a", "b")),
            amount=f"{rng.randrange(1, 900)}.{rng.randrange(100):02d}",
            currency=rng.choice(("INR", "USD")),
        )
        for _ in range(1_500)
    ]
    ids = enqueue(redis_sync, settings, txns)
    batch = [(t.user_id, entry_score(i)) for t, i in zip(txns, ids, strict=True)]
    scripts = _Counting(redis_client)
    cache = LedgerCache(min_entries=2)
    chunks = [batch[k : k + 30] for k in range(0, len(batch), 30)]
    for k in range(0, len(chunks) - 1, 2):
        await _compare(scripts, redis_client, settings, cache, chunks[k : k + 2])
        if k == 20:
            await _compare(scripts, redis_client, settings, cache, [chunks[3]])  # reclaimed
    assert scripts.short > 30


async def test_ledgers_read_in_several_calls_give_the_figures_of_one_call(
    settings: Settings, redis_sync: redis.Redis, redis_client: Redis, monkeypatch: Any
) -> None:
    """A batch's ledgers are read ``LEDGER_CHUNK`` sets per script call (so that api
    hand-offs run in between): with 5 per call, cached and not, the figures are those of
    one call per batch."""
    rng = random.Random(3)
    users = [f"u{i}" for i in range(12)]
    txns = [
        make_txn(user_id=rng.choice(users), amount=f"{rng.randrange(1, 50_000)}.00")
        for _ in range(600)
    ]
    ids = enqueue(redis_sync, settings, txns)
    batch = [(t.user_id, entry_score(i)) for t, i in zip(txns, ids, strict=True)]
    chunks = [batch[k : k + 50] for k in range(0, len(batch), 50)]
    scripts = _Counting(redis_client)
    one_call = [
        _facts(await fetch_histories(scripts, redis_client, settings, RULES, c), c) for c in chunks
    ]
    # How many ledgers a cache lets one call per batch read the short way.
    cache = LedgerCache(min_entries=2)
    for c in chunks:
        await fetch_histories(scripts, redis_client, settings, RULES, c, cache)
    short_in_one_call, scripts.short = scripts.short, 0
    calls = 0
    read = scripts._ledgers

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await read(*args, **kwargs)

    scripts._ledgers = counted  # type: ignore[assignment]
    monkeypatch.setattr(_scripts, "LEDGER_CHUNK", 5)
    cache = LedgerCache(min_entries=2)
    for c, expected in zip(chunks, one_call, strict=True):
        plain = await fetch_histories(scripts, redis_client, settings, RULES, c)
        assert _facts(plain, c) == expected
        cached = await fetch_histories(scripts, redis_client, settings, RULES, c, cache)
        assert _facts(cached, c) == expected
    assert calls >= 2 * len(chunks) * 2  # 12 users: 3 calls per read
    # Held ledgers were found in every call, not just the first.
    assert short_in_one_call > 50
    assert scripts.short == short_in_one_call
