"""A caught-up worker lingers after a batch (FINTRACK_WORKER_LINGER_MS), so that a trickle
of transactions makes fewer, larger batches; a real worker process on real servers."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime

import pytest
import redis
from enqueue import enqueue, make_txn
from worker_checks import decided

from conftest import RoleProcess, wait_until
from fintrack.config import Settings, SettingsError

StartRole = Callable[..., RoleProcess]
GAP_S = 0.25  # between the trickle's transactions: far longer than deciding one takes


def _trickle(settings: Settings, client: redis.Redis) -> list[datetime]:
    """One transaction, decided; then three more ``GAP_S`` apart: their decision times."""
    first = make_txn(user_id="u1", amount="10.00")
    enqueue(client, settings, [first])
    wait_until(lambda: str(first.txn_id) in decided(settings), 30, "the first decision")
    later = []
    for i in range(3):
        if i:
            time.sleep(GAP_S)
        txn = make_txn(user_id=f"u{i + 2}", amount="10.00")
        enqueue(client, settings, [txn])
        later.append(str(txn.txn_id))
    wait_until(lambda: set(later) <= set(decided(settings)), 30, "the trickle's decisions")
    rows = decided(settings)
    return [rows[txn_id].decided_at for txn_id in later]


def test_a_lingering_worker_decides_a_trickle_in_one_batch(
    settings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """Lingering 1 s after the first batch, the worker reads the next three transactions,
    sent 0.25 s apart, together: one batch, one decision time."""
    start_role("worker", dataclasses.replace(settings, worker_linger_ms=1000))
    times = _trickle(settings, redis_sync)
    assert len(set(times)) == 1, times


def test_without_lingering_each_arrival_is_its_own_batch(
    settings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """The control: with no linger the worker reads each one as it arrives."""
    start_role("worker", dataclasses.replace(settings, worker_linger_ms=0))
    times = _trickle(settings, redis_sync)
    assert len(set(times)) == 3, times


@pytest.mark.parametrize("value", ["-1", "1001", "soon"])
def test_a_bad_linger_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="FINTRACK_WORKER_LINGER_MS"):
        Settings.from_env({"FINTRACK_WORKER_LINGER_MS": value})
