"""One batch of stream entries: decode → facts → decide → commit → publish and ack.

``BatchProcessor.handle`` makes one attempt at a batch. Outage errors (Redis, PostgreSQL
unreachable) propagate for the caller to back off and retry the same batch; everything
that is the fault of one entry stays on that entry, so the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.core.activity import entry_score
from fintrack.core.events import EVENT_FIELDS, Decision, published_values
from fintrack.core.models import Transaction
from fintrack.core.streams import TXN_GROUP
from fintrack.fraud._engines import EngineKeeper
from fintrack.fraud._entries import PoisonError, StreamEntry, decode_transaction
from fintrack.fraud._history import LedgerCache, facts_for, fetch_histories
from fintrack.fraud._scripts import DeadLetter, Publication, Scripts
from fintrack.fraud.engine import Engine, Verdict
from fintrack.fraud.facts import Facts
from fintrack.fraud.store import commit_decisions

logger = structlog.get_logger(__name__)

ERROR_TEXT_MAX = 1_000
# A row PostgreSQL refuses: that transaction fails, the rest of the batch goes on.
_ROW_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


class _Item:
    """One entry on its way through the batch."""

    __slots__ = ("attempts", "dead", "decision", "duplicate", "entry", "error", "txn")

    def __init__(self, entry: StreamEntry) -> None:
        self.entry = entry
        self.txn: Transaction | None = None
        self.decision: Decision | None = None
        self.error: str | None = None
        self.attempts = 0
        self.dead = False
        self.duplicate = False  # same txn_id as an earlier entry of the batch

    def fail(self, error: str) -> None:
        self.error = error[:ERROR_TEXT_MAX]
        self.decision = None


class BatchStats:
    """What became of a batch's entries, for the summary log line."""

    __slots__ = ("acked", "dead", "lost", "retry")

    def __init__(self) -> None:
        self.acked = 0
        self.dead = 0
        self.retry = 0  # failed, left pending for a later attempt
        self.lost = 0  # reclaimed by another consumer before we could ack


class BatchProcessor:
    """Handles batches for one consumer (see the module docstring).

    ``crash_after_commits`` is the test-only fault hook: ``os._exit(137)`` right after that
    many successful commits, before publishing and acking."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: str,
        redis: Redis,
        pool: AsyncConnectionPool[Any],
        scripts: Scripts,
        engines: EngineKeeper,
        crash_after_commits: int | None = None,
    ) -> None:
        self._settings = settings
        self._consumer = consumer
        self._redis = redis
        self._pool = pool
        self._scripts = scripts
        self._engines = engines
        self._crash_after = crash_after_commits
        self._commits = 0
        self._ledgers = LedgerCache()

    async def handle(
        self, entries: Sequence[StreamEntry], committed: asyncio.Future[None] | None = None
    ) -> BatchStats:
        """One attempt at a batch: decode, facts, decide, commit, publish and ack.
        ``committed`` is resolved once the batch's decisions are committed (before they
        are published), so the caller may read on meanwhile."""
        items = [_Item(e) for e in entries]
        seen: set[uuid.UUID] = set()
        for item in items:
            try:
                item.txn = decode_transaction(item.entry)
            except PoisonError as e:
                item.fail(str(e))
                continue
            if item.txn.txn_id in seen:
                item.duplicate = True  # the api never enqueues twice; never publish twice
            seen.add(item.txn.txn_id)
        await self._decide([i for i in items if i.txn is not None and not i.duplicate])
        await self._mark_attempts([i for i in items if i.error is not None])
        await self._commit([i for i in items if i.decision is not None])
        if committed is not None and not committed.done():
            committed.set_result(None)
        return await self._publish(items)

    async def _decide(self, items: list[_Item]) -> None:
        """Facts (one pipeline) and the engine's verdicts; failures stay on their item."""
        if not items:
            return
        batch: list[tuple[str, int]] = []
        for item in items:
            assert item.txn is not None
            batch.append((item.txn.user_id, entry_score(item.entry.id)))
        rules = None
        while rules is not self._engines.engine.settings:
            # Read the ledgers for the windows of the settings in force; should the rules
            # file be reloaded while we wait (another batch's turn), read again.
            rules = self._engines.engine.settings
            histories = await fetch_histories(
                self._scripts, self._redis, self._settings, rules, batch, self._ledgers
            )
            await self._engines.sync_blocklist(self._pool, histories.blocklist_version)
        engine = self._engines.engine
        ready: list[tuple[_Item, Transaction, Facts]] = []
        for item, (user_id, score) in zip(items, batch, strict=True):
            assert item.txn is not None
            facts = facts_for(histories, user_id, score, engine.settings)
            if isinstance(facts, ValueError):
                item.fail(str(facts))
            else:
                ready.append((item, item.txn, facts))
        verdicts = _decide_all(engine, ready)
        decided_at_ms = time.time_ns() // 1_000_000
        for (item, txn, _), verdict in zip(ready, verdicts, strict=True):
            if isinstance(verdict, Exception):
                item.fail(f"rule evaluation failed: {type(verdict).__name__}: {verdict}")
                continue
            item.decision = Decision(
                txn=txn,
                status=verdict.status,
                risk_score=verdict.risk_score,
                hits=verdict.hits,
                decided_at_ms=decided_at_ms,
            )

    async def _mark_attempts(self, failed: list[_Item]) -> None:
        """Look up the delivery count of failed entries. Those out of attempts are dead,
        and a decodable one gets a FAILED decision to commit."""
        if not failed:
            return
        s = self._settings
        async with self._redis.pipeline(transaction=False) as pipe:
            for item in failed:
                pipe.xpending_range(s.txn_stream, TXN_GROUP, item.entry.id, item.entry.id, 1)
            replies = await pipe.execute()
        now_ms = time.time_ns() // 1_000_000
        for item, reply in zip(failed, replies, strict=True):
            mine = bool(reply) and _text(reply[0]["consumer"]) == self._consumer
            item.attempts = int(reply[0]["times_delivered"]) if reply else 0
            with structlog.contextvars.bound_contextvars(
                txn_id=str(item.txn.txn_id) if item.txn else None
            ):
                logger.warning(
                    "entry failed",
                    entry_id=item.entry.id,
                    attempts=item.attempts,
                    max_attempts=s.worker_max_attempts,
                    error=item.error,
                )
            if not mine or item.attempts < s.worker_max_attempts:
                continue
            item.dead = True
            if item.txn is not None and not item.duplicate:
                item.decision = Decision(
                    txn=item.txn,
                    status="FAILED",
                    risk_score=0,
                    hits=(),
                    decided_at_ms=now_ms,
                    failure_reason=item.error,
                )

    async def _commit(self, items: list[_Item]) -> None:
        """All decisions in one commit; the stored decision replaces each item's own.

        If PostgreSQL refuses a row (bad data the decoder let through), the batch is
        committed row by row so that only the bad transaction fails."""
        if not items:
            return
        decisions = [i.decision for i in items if i.decision is not None]
        try:
            stored = await commit_decisions(self._pool, decisions)
        except _ROW_ERRORS as e:
            logger.warning("batch refused by PostgreSQL; committing row by row", error=str(e))
            await self._commit_one_by_one(items)
        else:
            for item, decision in zip(items, stored, strict=True):
                item.decision = decision
        self._commits += 1
        if self._crash_after is not None and self._commits >= self._crash_after:
            logger.warning("fault injection: crashing after commit", commits=self._commits)
            os._exit(137)

    async def _commit_one_by_one(self, items: list[_Item]) -> None:
        refused: list[_Item] = []
        for item in items:
            assert item.decision is not None
            try:
                (item.decision,) = await commit_decisions(self._pool, [item.decision])
            except _ROW_ERRORS as e:
                item.fail(f"PostgreSQL refused the transaction: {e}")
                item.dead = False
                refused.append(item)
        await self._mark_attempts(refused)
        for item in refused:
            item.decision = None  # a FAILED row would be refused just the same

    async def _publish(self, items: list[_Item]) -> BatchStats:
        """One script: for each entry still ours, dead-letter it if dead, publish the
        events of its decision in force, ack it. Failed entries are left pending."""
        s = self._settings
        stats = BatchStats()
        publications: list[Publication] = []
        # Every transaction id as text in one call (msgspec does it in C; str() is slow).
        ids = [item.decision.txn.txn_id for item in items if item.decision is not None]
        texts: list[str] = msgspec.to_builtins(ids)
        txn_ids = dict(zip(ids, texts, strict=True))
        for item in items:
            if item.duplicate:
                publications.append(Publication(item.entry.id, None, ()))
                continue
            if item.error is not None and not item.dead:
                stats.retry += 1
                continue
            decision = item.decision
            if item.dead and decision is not None and decision.status != "FAILED":
                item.dead = False  # decided by an earlier delivery: that decision stands
            values: list[str] = []
            if decision is not None:
                values = published_values(decision, txn_ids[decision.txn.txn_id])
            dead = None
            if item.dead:
                dead = DeadLetter(item.entry.payload, item.error or "", item.attempts)
            publications.append(Publication(item.entry.id, dead, values))
        acked = await self._scripts.publish_and_ack(
            stream=s.txn_stream,
            events_stream=s.event_stream,
            dead_stream=s.dead_letter_stream,
            dead_maxlen=s.stream_retention,
            group=TXN_GROUP,
            consumer=self._consumer,
            event_fields=EVENT_FIELDS,
            items=publications,
        )
        stats.acked = len(acked)
        stats.lost = len(publications) - len(acked)
        for item in items:
            if item.dead and item.entry.id in acked:
                stats.dead += 1
                with structlog.contextvars.bound_contextvars(
                    txn_id=str(item.txn.txn_id) if item.txn else None
                ):
                    logger.error(
                        "entry dead-lettered",
                        entry_id=item.entry.id,
                        attempts=item.attempts,
                        error=item.error,
                    )
        return stats


def _decide_all(
    engine: Engine, ready: list[tuple[_Item, Transaction, Facts]]
) -> list[Verdict | Exception]:
    """The engine over the batch; if it raises, one by one so only the culprit fails."""
    pairs = [(txn, facts) for _, txn, facts in ready]
    try:
        return list(engine.decide_batch(pairs))
    except Exception as e:  # noqa: BLE001 - a rule bug must fail its transaction, not the worker
        logger.warning("engine failed on the batch; deciding one by one", error=repr(e))
    verdicts: list[Verdict | Exception] = []
    for item, txn, facts in ready:
        try:
            verdicts.append(engine.decide(txn, facts))
        except Exception as e:  # isolate the transaction that breaks a rule (logged below)
            with structlog.contextvars.bound_contextvars(txn_id=str(txn.txn_id)):
                logger.exception("rule evaluation failed", entry_id=item.entry.id)
            verdicts.append(e)
    return verdicts


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
