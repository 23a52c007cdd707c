"""A Hypothesis state machine interleaves delivery, redelivery, crashes (before and after
the commit) and reclaims of stream entries between consumers, driving the worker's batch
step (``BatchProcessor.handle``) in-process against real Redis and PostgreSQL.

Invariants after every step: each decision's velocity figures equal the ground truth
computed from the accepted transactions alone, no transaction is decided or published
twice. At the end of each run, once everything is drained: every transaction decided
once, nothing pending, each decision published exactly once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
import redis
from enqueue import enqueue
from hypothesis import Phase
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from worker_checks import (
    assert_published_once,
    decided,
    event_counts,
    ground_truth,
    pending,
    recorded_figures,
    rule_hits,
    velocity_rules_file,
)

from fintrack.config import Settings
from fintrack.core.db import open_pool
from fintrack.core.models import Transaction
from fintrack.core.streams import TXN_GROUP, ensure_group, redis_client
from fintrack.fraud._batch import BatchProcessor
from fintrack.fraud._engines import EngineKeeper
from fintrack.fraud._entries import StreamEntry, parse_entries, parse_read
from fintrack.fraud._scripts import Scripts

LOOPS = int(os.environ.get("FINTRACK_TEST_LOOPS", "3"))
CONSUMERS = ("c0", "c1", "c2")
USERS = ("u0", "u1", "u2")


class Crash(Exception):
    """The process died right after its commit, before publishing and acking."""


class CrashAfterCommit(Scripts):
    """Scripts whose publish-and-ack step never happens: the process is gone by then."""

    async def publish_and_ack(self, **_: Any) -> set[str]:
        raise Crash


class DeliveryMachine(RuleBasedStateMachine):
    """One consumer group, three consumers, each holding batches the way a worker does."""

    base: ClassVar[Settings]
    loop: ClassVar[asyncio.AbstractEventLoop]
    aredis: ClassVar[Redis]
    pool: ClassVar[AsyncConnectionPool[Any]]
    runs: ClassVar[Iterator[int]]

    def __init__(self) -> None:
        super().__init__()
        self.s = dataclasses.replace(
            self.base, key_prefix=f"{self.base.key_prefix}:{next(self.runs)}"
        )
        self.sync = redis.Redis.from_url(self.s.redis_url)
        self.txns: list[Transaction] = []
        self.ids: list[str] = []
        self.in_hand: dict[str, list[list[StreamEntry]]] = {c: [] for c in CONSUMERS}
        self.rng = random.Random(0)
        self._run(self._reset())

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _reset(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("TRUNCATE transactions, rule_hits, security_events")
        await ensure_group(self.aredis, self.s.txn_stream, TXN_GROUP, start_id="0")

    def _processor(self, consumer: str, scripts: Scripts | None = None) -> BatchProcessor:
        return BatchProcessor(
            self.s,
            consumer=consumer,
            redis=self.aredis,
            pool=self.pool,
            scripts=scripts or Scripts(self.aredis),
            engines=EngineKeeper(self.s),
        )

    # ---- what clients and workers do ------------------------------------------------

    # From 2 cents: a window's total must exceed the rules' max_amount of 0.01 so that
    # every decision records its amount figure (a lone 0.01 left none, and failed the check).
    @rule(user=st.sampled_from(USERS), n=st.integers(1, 6), cents=st.integers(2, 100_000))
    def submit(self, user: str, n: int, cents: int) -> None:
        """The api accepts ``n`` transactions of one user (stream entry + ledger, atomically)."""
        txns = [
            Transaction(
                txn_id=uuid.UUID(int=self.rng.getrandbits(128), version=4),
                user_id=user,
                amount=Decimal(cents + i) / 100,
                currency="USD",
                merchant_type="general",
                source_ip="198.51.100.7",
                client_id="acme",
                received_at_ms=0,
            )
            for i in range(n)
        ]
        self.ids += enqueue(self.sync, self.s, txns)
        self.txns += txns

    @rule(consumer=st.sampled_from(CONSUMERS), count=st.integers(1, 8))
    def deliver(self, consumer: str, count: int) -> None:
        """XREADGROUP ``>``: new entries for this consumer, held until processed."""
        reply = self._run(
            self.aredis.xreadgroup(TXN_GROUP, consumer, {self.s.txn_stream: ">"}, count=count)
        )
        self._hold(consumer, parse_read(reply))

    @rule(consumer=st.sampled_from(CONSUMERS))
    def process(self, consumer: str) -> None:
        """The consumer decides, commits, publishes and acks its oldest batch in hand."""
        if self.in_hand[consumer]:
            batch = self.in_hand[consumer].pop(0)
            self._run(self._processor(consumer).handle(batch))

    @rule(consumer=st.sampled_from(CONSUMERS))
    def crash_after_commit(self, consumer: str) -> None:
        """The consumer commits its oldest batch and dies before publishing and acking."""
        if self.in_hand[consumer]:
            batch = self.in_hand[consumer].pop(0)
            with pytest.raises(Crash):
                self._run(self._processor(consumer, CrashAfterCommit(self.aredis)).handle(batch))
            self.in_hand[consumer].clear()

    @rule(consumer=st.sampled_from(CONSUMERS))
    def crash(self, consumer: str) -> None:
        """The consumer dies holding its batches: they stay pending under its name."""
        self.in_hand[consumer].clear()

    @rule(consumer=st.sampled_from(CONSUMERS))
    def restart(self, consumer: str) -> None:
        """A consumer restarted under its name re-reads its own pending entries first."""
        self.in_hand[consumer].clear()
        reply = self._run(
            self.aredis.xreadgroup(TXN_GROUP, consumer, {self.s.txn_stream: "0"}, count=100)
        )
        self._hold(consumer, parse_read(reply))

    @rule(consumer=st.sampled_from(CONSUMERS))
    def reclaim(self, consumer: str) -> None:
        """XAUTOCLAIM: the consumer takes over every pending entry, whoever held it (the
        previous holder, if alive, then finds them gone when it acks)."""
        reply = self._run(
            self.aredis.xautoclaim(self.s.txn_stream, TXN_GROUP, consumer, 0, count=100)
        )
        self._hold(consumer, parse_entries(reply[1]))

    def _hold(self, consumer: str, entries: Sequence[StreamEntry]) -> None:
        if entries:
            self.in_hand[consumer].append(list(entries))

    # ---- what must hold -------------------------------------------------------------

    @invariant()
    def exact_and_once(self) -> None:
        """Every decision so far counted exactly the accepted transactions before it, and
        was published at most once."""
        rows = decided(self.s)
        truth = ground_truth(self.txns, self.ids)
        hits = rule_hits(self.s)
        for txn_id in rows:
            assert recorded_figures(hits.get(txn_id, {})) == truth[txn_id], txn_id
        for (txn_id, _), times in event_counts(self.sync, self.s).items():
            assert times == 1
            assert txn_id in rows

    def teardown(self) -> None:
        try:
            for consumer in CONSUMERS:
                self.in_hand[consumer].clear()
            # Whatever is left: a survivor reclaims the pending entries, then reads the rest.
            while pending(self.sync, self.s) or self._unread():
                self.reclaim("c0")
                self.deliver("c0", 100)
                while self.in_hand["c0"]:
                    self.process("c0")
            rows = decided(self.s)
            assert set(rows) == {str(t.txn_id) for t in self.txns}
            assert pending(self.sync, self.s) == 0
            assert_published_once(self.sync, self.s, rows)
            self.exact_and_once()
        finally:
            keys = list(self.sync.scan_iter(match=f"{self.s.key_prefix}:*"))
            if keys:
                self.sync.delete(*keys)
            self.sync.close()

    def _unread(self) -> bool:
        groups = self.sync.xinfo_groups(self.s.txn_stream)
        return any(g["lag"] for g in groups if g["name"] == TXN_GROUP.encode())


def test_interleaved_delivery_keeps_the_velocity_invariant(
    settings: Settings, tmp_path: Path
) -> None:
    """Any interleaving of deliver / process / crash / crash-after-commit / restart /
    reclaim: figures exact at every step, everything decided and published once at the end."""
    base = dataclasses.replace(
        settings, rules_file=velocity_rules_file(tmp_path), worker_heartbeat_file=""
    )
    loop = asyncio.new_event_loop()
    try:
        DeliveryMachine.base = base
        DeliveryMachine.loop = loop
        DeliveryMachine.aredis = redis_client(base)
        DeliveryMachine.pool = loop.run_until_complete(open_pool(base, max_size=2))
        DeliveryMachine.runs = itertools.count()
        loop.run_until_complete(DeliveryMachine.pool.wait())
        run_state_machine_as_test(
            DeliveryMachine,
            # No shrinking: with real servers it takes minutes; the failing steps are printed.
            settings=hsettings(
                max_examples=3 * LOOPS,
                stateful_step_count=20,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],
            ),
        )
    finally:
        loop.run_until_complete(DeliveryMachine.pool.close())
        loop.run_until_complete(DeliveryMachine.aredis.aclose())
        loop.close()
