"""Entries that keep failing go to the dead-letter stream; outages are waited out without
acking, dead-lettering or counting deliveries."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import psycopg
import redis
from enqueue import enqueue, enqueue_raw, make_txn
from psycopg import sql
from worker_checks import (
    assert_published_once,
    count_decided,
    decided,
    event_counts,
    events,
    pending,
    usd_traffic,
)

from conftest import RoleProcess, Services, wait_until
from fintrack.config import Settings
from fintrack.core.activity import activity_key
from fintrack.core.streams import TXN_GROUP

StartRole = Callable[..., RoleProcess]


def test_poison_entries_are_dead_lettered_while_the_rest_flows(
    settings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """After max attempts a failing entry is dead-lettered (and a decodable one stored as
    FAILED with its alert); entries behind it are decided without waiting for it."""
    s = dataclasses.replace(
        settings, worker_max_attempts=3, worker_claim_idle_ms=300, worker_heartbeat_file=""
    )
    garbage = enqueue_raw(redis_sync, s, {"txn": b"not json at all"})
    no_field = enqueue_raw(redis_sync, s, {"something": b"else"})
    # A decodable transaction whose user's activity ledger is corrupt: its facts fail.
    mallory = make_txn(user_id="mallory", amount="10.00")
    ten_ms_ago = (time.time_ns() // 1_000_000 - 10) * 1000  # an activity score (ms * 1000)
    redis_sync.zadd(activity_key(s, "mallory"), {"not-a-member": ten_ms_ago})
    (mallory_id,) = enqueue(redis_sync, s, [mallory])
    good = usd_traffic(100, users=5, seed=1)
    enqueue(redis_sync, s, good)

    start_role("worker", s, "--consumer", "p1")
    wait_until(lambda: redis_sync.xlen(s.dead_letter_stream) == 3, 30, "three dead letters")
    wait_until(lambda: pending(redis_sync, s) == 0, 10, "every entry acked")

    dead = {f[b"entry"].decode(): f for _, f in redis_sync.xrange(s.dead_letter_stream)}
    assert set(dead) == {garbage, no_field, mallory_id}
    assert all(f[b"attempts"] == b"3" for f in dead.values())
    assert dead[garbage][b"payload"] == b"not json at all"
    assert b"undecodable" in dead[garbage][b"error"]
    assert b"'txn'" in dead[no_field][b"error"]
    assert b"corrupt" in dead[mallory_id][b"error"]

    rows = decided(s)
    assert set(rows) == {str(t.txn_id) for t in good} | {str(mallory.txn_id)}
    failed = rows[str(mallory.txn_id)]
    assert failed.status == "FAILED"
    assert failed.failure_reason is not None
    assert "corrupt" in failed.failure_reason
    # The good entries behind the poison did not wait for its three attempts.
    assert max(rows[str(t.txn_id)].decided_at for t in good) < failed.decided_at
    assert_published_once(redis_sync, s, rows)
    failed_events = [e for _, e, _ in events(redis_sync, s) if e.txn_id == str(mallory.txn_id)]
    assert {(e.kind, e.status, e.severity) for e in failed_events} == {
        ("decision", "FAILED", "critical"),
        ("alert", "FAILED", "critical"),
    }


def _set_connections(services: Services, database_url: str, allowed: bool) -> None:
    """Open or close THIS test's database to new connections (and drop the current ones)."""
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    assert isinstance(name, str)
    with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allowed)
            )
        )
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )


def test_postgresql_outage_is_waited_out(
    settings: Settings, services: Services, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """While PostgreSQL refuses connections nothing is acked, dead-lettered or redelivered;
    when it returns every transaction is decided once."""
    s = dataclasses.replace(
        settings, worker_max_attempts=2, worker_claim_idle_ms=1_000, worker_heartbeat_file=""
    )
    workers = [start_role("worker", s, "--consumer", f"o{i}") for i in (1, 2)]
    wait_until(
        lambda: (
            redis_sync.exists(s.txn_stream) == 1
            and len(redis_sync.xinfo_consumers(s.txn_stream, TXN_GROUP)) == 2
        ),
        30,
        "both workers reading",
    )
    _set_connections(services, s.database_url, allowed=False)
    try:
        txns = usd_traffic(300, users=20, seed=9)
        enqueue(redis_sync, s, txns)
        wait_until(lambda: pending(redis_sync, s) == len(txns), 30, "every entry delivered")
        outage_started = time.monotonic()

        def still_held() -> bool:
            # Checked on every poll, for three claim periods (and two "max attempts").
            assert pending(redis_sync, s) == len(txns)
            assert redis_sync.xlen(s.dead_letter_stream) == 0
            assert redis_sync.exists(s.event_stream) == 0 or redis_sync.xlen(s.event_stream) == 0
            rows = redis_sync.xpending_range(s.txn_stream, TXN_GROUP, "-", "+", len(txns))
            assert {r["times_delivered"] for r in rows} == {1}
            return time.monotonic() - outage_started > 3.0

        wait_until(still_held, 15, "three seconds of outage")
        assert any("dependency unavailable" in w.log() for w in workers)
    finally:
        _set_connections(services, s.database_url, allowed=True)

    wait_until(lambda: pending(redis_sync, s) == 0, 60, "backlog acked after the outage")
    assert count_decided(s) == len(txns)
    rows = decided(s)
    assert_published_once(redis_sync, s, rows)
    assert redis_sync.xlen(s.dead_letter_stream) == 0
    assert sum(event_counts(redis_sync, s).values()) >= len(txns)
    for w in workers:
        assert w.stop() == 0, w.log()


def test_drain_that_leaves_a_failing_entry_pending_exits_non_zero(
    settings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """`run worker --drain` decides what it can, but a failed entry it leaves pending (to
    be retried) makes it exit 1, never 0."""
    s = dataclasses.replace(settings, worker_max_attempts=5, worker_heartbeat_file="")
    enqueue_raw(redis_sync, s, {"txn": b"not json at all"})
    good = usd_traffic(20, users=3, seed=2)
    enqueue(redis_sync, s, good)
    worker = start_role("worker", s, "--drain", "--consumer", "drainer")
    assert worker.proc.wait(60) == 1, worker.log()
    assert count_decided(s) == len(good)
    assert pending(redis_sync, s, "drainer") == 1
    assert "drain ended with entries pending" in worker.log()
