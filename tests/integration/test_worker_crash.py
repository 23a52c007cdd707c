"""Workers that die or are stopped: kill -9 mid-batch, a crash between the PostgreSQL
commit and the ack, SIGTERM under load. Nothing is lost, counted twice or published twice."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import redis
from enqueue import enqueue
from worker_checks import (
    assert_published_once,
    assert_velocity_matches,
    count_decided,
    decided,
    events,
    paced_enqueue,
    pending,
    rule_hits,
    usd_traffic,
    velocity_rules_file,
)

from conftest import RoleProcess, wait_until
from fintrack.config import Settings
from fintrack.core.models import Transaction
from fintrack.fraud.worker import PIPELINE_DEPTH

StartRole = Callable[..., RoleProcess]


@pytest.fixture
def s(settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(
        settings,
        rules_file=velocity_rules_file(tmp_path),
        worker_batch_size=50,
        worker_claim_idle_ms=1_000,
        worker_heartbeat_file="",
    )


class Traffic:
    """Enqueues transactions from a background thread, as clients would keep sending: at
    least ``minimum`` of ``pool``, and more until the ``with`` block ends (or the pool is
    used up). ``txns`` and ``ids`` are what was actually sent."""

    def __init__(self, settings: Settings, pool: list[Transaction], *, minimum: int) -> None:
        self.txns: list[Transaction] = []
        self.ids: list[str] = []
        self._pool = pool
        self._minimum = minimum
        self._settings = settings
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        c = redis.Redis.from_url(self._settings.redis_url)
        try:
            for start in range(0, len(self._pool), 25):
                if self._done.is_set() and len(self.txns) >= self._minimum:
                    return
                chunk = self._pool[start : start + 25]
                self.ids += paced_enqueue(c, self._settings, chunk, chunk=25)
                self.txns += chunk
        finally:
            c.close()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(120)


def _stop_while_holding(
    redis_sync: redis.Redis, s: Settings, proc: RoleProcess, consumer: str, sig: int
) -> int:
    """Freeze the worker at a moment it holds entries, then send ``sig``; returns how many
    entries it held."""
    held = 0

    def frozen_holding() -> bool:
        nonlocal held
        proc.proc.send_signal(signal.SIGSTOP)
        held = pending(redis_sync, s, consumer)
        if held:
            return True
        proc.proc.send_signal(signal.SIGCONT)
        return False

    wait_until(frozen_holding, 30, f"{consumer} holding a batch")
    proc.proc.send_signal(sig)
    if sig != signal.SIGKILL:
        proc.proc.send_signal(signal.SIGCONT)
    return held


def test_kill_9_mid_batch_loses_nothing(
    s: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """A worker killed with entries in hand: others reclaim and decide them, once."""
    victim = start_role("worker", s, "--consumer", "k1")
    others = [start_role("worker", s, "--consumer", f"k{i}") for i in (2, 3)]
    with Traffic(s, usd_traffic(8_000, users=50, seed=11), minimum=1_500) as traffic:
        held = _stop_while_holding(redis_sync, s, victim, "k1", signal.SIGKILL)
        assert victim.proc.wait(10) == -signal.SIGKILL
    assert held > 0
    wait_until(lambda: count_decided(s) == len(traffic.txns), 120, "all decided")
    wait_until(lambda: pending(redis_sync, s) == 0, 30, "every entry acked")
    assert pending(redis_sync, s, "k1") == 0
    assert any("reclaimed idle entries" in w.log() for w in others)
    rows = decided(s)
    assert set(rows) == {str(t.txn_id) for t in traffic.txns}
    assert_velocity_matches(s, traffic.txns, traffic.ids)
    assert_published_once(redis_sync, s, rows)


def test_crash_after_commit_redelivers_the_stored_decision(
    s: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """Committed but not acked: redelivery adds no row, no second event, same figures."""
    txns = usd_traffic(200, users=10, seed=3)
    ids = enqueue(redis_sync, s, txns)
    crashing = start_role(
        "worker", s, "--consumer", "crashy", FINTRACK_FAULT_CRASH_AFTER_COMMIT="1"
    )
    assert crashing.proc.wait(60) == 137, crashing.log()
    committed = decided(s)
    # The first commit, and maybe those of other batches in flight (PIPELINE_DEPTH in hand).
    assert s.worker_batch_size <= len(committed) <= PIPELINE_DEPTH * s.worker_batch_size
    hits_before = rule_hits(s)
    assert events(redis_sync, s) == []
    assert pending(redis_sync, s, "crashy") >= len(committed)  # and maybe a batch not committed

    # Reclaimed by another worker (XAUTOCLAIM) once idle: decided from the stored rows.
    rescuer = start_role("worker", s, "--consumer", "rescuer")
    wait_until(lambda: count_decided(s) == len(txns), 60, "all decided")
    wait_until(lambda: pending(redis_sync, s) == 0, 30, "redelivered entries acked")
    assert "reclaimed idle entries" in rescuer.log()
    final = decided(s)
    assert {k: final[k] for k in committed} == committed  # nothing rewritten
    hits_after = rule_hits(s)
    assert {k: hits_after.get(k) for k in committed} == {k: hits_before.get(k) for k in committed}
    assert_published_once(redis_sync, s, final)
    for _, event, _ in events(redis_sync, s):  # the stored decision is what was published
        row = final[event.txn_id]
        assert event.status == row.status
        assert datetime.fromisoformat(event.decided_at) == row.decided_at
    assert_velocity_matches(s, txns, ids)
    assert rescuer.stop() == 0


def test_restart_under_the_same_name_finishes_its_own_pending(
    s: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """A worker restarted under its name re-reads its pending entries first."""
    s = dataclasses.replace(s, worker_claim_idle_ms=600_000)  # nobody else reclaims
    txns = usd_traffic(120, users=5, seed=5)
    enqueue(redis_sync, s, txns)
    crashing = start_role("worker", s, "--consumer", "same", FINTRACK_FAULT_CRASH_AFTER_COMMIT="1")
    assert crashing.proc.wait(60) == 137, crashing.log()
    committed = decided(s)
    assert pending(redis_sync, s, "same") >= len(committed) > 0
    again = start_role("worker", s, "--consumer", "same", "--drain")
    assert again.proc.wait(60) == 0, again.log()
    assert "resuming own pending entries" in again.log()
    assert pending(redis_sync, s) == 0
    final = decided(s)
    assert len(final) == len(txns)
    assert {k: final[k] for k in committed} == committed
    assert_published_once(redis_sync, s, final)


def test_sigterm_under_load_finishes_the_batch_and_exits_0(
    s: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """SIGTERM with a batch in hand: it is committed and acked, exit 0 within 10 s."""
    worker = start_role("worker", s, "--consumer", "t1")
    with Traffic(s, usd_traffic(8_000, users=50, seed=13), minimum=1_000) as traffic:
        _stop_while_holding(redis_sync, s, worker, "t1", signal.SIGTERM)
        signalled = time.monotonic()
        assert worker.proc.wait(10) == 0, worker.log()
        assert time.monotonic() - signalled < 10
    assert pending(redis_sync, s, "t1") == 0
    assert "worker stopped" in worker.log()

    finisher = start_role("worker", s, "--drain")
    assert finisher.proc.wait(60) == 0, finisher.log()
    rows = decided(s)
    assert set(rows) == {str(t.txn_id) for t in traffic.txns}
    assert pending(redis_sync, s) == 0
    assert_velocity_matches(s, traffic.txns, traffic.ids)
    assert_published_once(redis_sync, s, rows)
