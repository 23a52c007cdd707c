"""Ten worker processes share one stream: every transaction decided once, with exact
velocity figures, and each decision's events published exactly once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import redis
from worker_checks import (
    assert_published_once,
    assert_velocity_matches,
    count_decided,
    decided,
    paced_enqueue,
    pending,
    usd_traffic,
    velocity_rules_file,
)

from conftest import RoleProcess, wait_until
from fintrack.config import Settings

StartRole = Callable[..., RoleProcess]


def test_ten_workers_decide_each_transaction_once_with_exact_velocity(
    settings: Settings, redis_sync: redis.Redis, start_role: StartRole, tmp_path: Path
) -> None:
    """5,000 transactions of 50 users over ten workers: one row each, velocity figures
    equal to the ground truth, nothing pending, each decision's events published once."""
    s = dataclasses.replace(
        settings,
        rules_file=velocity_rules_file(tmp_path),
        worker_batch_size=100,
        worker_heartbeat_file="",
    )
    workers = [start_role("worker", s, "--consumer", f"w{i}") for i in range(10)]
    txns = usd_traffic(5_000, users=50, seed=7)
    ids = paced_enqueue(redis_sync, s, txns)

    wait_until(lambda: count_decided(s) == len(txns), 180, "all transactions decided")
    wait_until(lambda: pending(redis_sync, s) == 0, 30, "every entry acked")
    rows = decided(s)
    assert set(rows) == {str(t.txn_id) for t in txns}
    assert_velocity_matches(s, txns, ids)
    assert_published_once(redis_sync, s, rows)
    assert redis_sync.xlen(s.dead_letter_stream) == 0
    # Work was shared: more than one worker decided something.
    consumers = redis_sync.xinfo_consumers(s.txn_stream, "fraud-workers")
    assert len(consumers) == 10
    for w in workers:
        assert w.stop() == 0, w.log()
