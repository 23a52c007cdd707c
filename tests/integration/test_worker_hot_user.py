"""A very busy user (the api's default ``anonymous``): its ledger is read capped, counts
stay exact, and amounts sum the newest entries of a window, whichever batch it is in."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import redis
from enqueue import enqueue, make_txn
from worker_checks import count_decided, pending, rule_hits

from conftest import RoleProcess, wait_until
from fintrack.config import Settings
from fintrack.fraud.velocity import SUM_CAP

StartRole = Callable[..., RoleProcess]

RULES = """
[[velocity.windows]]
window_s = 3600
max_count = 1
max_amount = "0.01"
"""


def test_a_busy_users_figures_are_exact_counts_and_capped_sums(
    settings: Settings, redis_sync: redis.Redis, start_role: StartRole, tmp_path: Path
) -> None:
    """Past ``SUM_CAP`` entries in a window the count stays exact and the amount is the sum
    of the newest ``SUM_CAP``, marked as a lower bound, for every batch the user is in."""
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    s = dataclasses.replace(
        settings, rules_file=str(rules), worker_batch_size=150, worker_heartbeat_file=""
    )
    busy = [make_txn(user_id="anonymous", amount="2.00", currency="USD") for _ in range(1_100)]
    quiet = make_txn(user_id="someone", amount="5.00", currency="USD")
    enqueue(redis_sync, s, [*busy[:600], quiet, *busy[600:]])
    start_role("worker", s, "--consumer", "w1")
    wait_until(lambda: count_decided(s) == len(busy) + 1, 60, "all decided")
    wait_until(lambda: pending(redis_sync, s) == 0, 10, "every entry acked")

    hits = rule_hits(s)
    for k, txn in enumerate(busy, start=1):
        reasons = hits[str(txn.txn_id)]
        count = re.search(r"(\d+) transactions in 1 h", reasons.get("velocity_count", ""))
        assert (int(count.group(1)) if count else 1) == k, (k, reasons)  # 1 is no hit
        amount = re.search(r"USD ([\d,]+\.\d\d) in 1 h", reasons["velocity_amount"])
        assert amount is not None
        assert Decimal(amount.group(1).replace(",", "")) == 2 * min(k, SUM_CAP), (k, reasons)
        unsummed = re.search(r"the (\d+) oldest not summed", reasons["velocity_amount"])
        assert (int(unsummed.group(1)) if unsummed else 0) == max(k - SUM_CAP, 0), (k, reasons)
    assert "velocity_count" not in hits.get(str(quiet.txn_id), {})
