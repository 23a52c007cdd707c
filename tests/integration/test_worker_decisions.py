"""The worker decides real transactions: seed examples, blocklist changes, the events
archive and stream trimming, against real Redis and PostgreSQL with real worker processes."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis
from enqueue import enqueue, make_txn
from worker_checks import assert_published_once, count_decided, decided, events, rule_hits

from conftest import RoleProcess, wait_until
from fintrack.config import Settings
from fintrack.core import blocklist
from fintrack.core.db import open_pool
from fintrack.core.streams import ARCHIVE_GROUP, TXN_GROUP, ensure_group
from fintrack.core.streams import redis_client as async_redis

StartRole = Callable[..., RoleProcess]


@pytest.fixture
def wsettings(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    heartbeat = tmp_path_factory.mktemp("hb") / "worker.heartbeat"
    return dataclasses.replace(settings, worker_heartbeat_file=str(heartbeat))


def test_seed_examples_get_their_decisions(
    wsettings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """The seed's examples are FLAGGED or BLOCKED with reasons; an ordinary txn is APPROVED."""
    seed = make_txn(
        user_id="user_123",
        amount="150000.00",
        merchant_type="luxury_goods",
        source_ip="192.168.1.50",
    )
    curl = make_txn(user_id="anonymous", amount="200000.00", source_ip="12.34.56.78")
    small = make_txn(user_id="user_9", amount="250.00")
    enqueue(redis_sync, wsettings, [seed, curl, small])

    worker = start_role("worker", wsettings, "--drain")
    assert worker.proc.wait(60) == 0, worker.log()

    rows = decided(wsettings)
    hits = rule_hits(wsettings)
    assert rows[str(seed.txn_id)].status in ("FLAGGED", "BLOCKED")
    assert set(hits[str(seed.txn_id)]) == {"high_value", "risky_merchant"}
    assert "luxury_goods" in hits[str(seed.txn_id)]["risky_merchant"]
    assert rows[str(curl.txn_id)].status in ("FLAGGED", "BLOCKED")
    assert "INR 200,000.00" in hits[str(curl.txn_id)]["high_value"]
    assert rows[str(small.txn_id)].status == "APPROVED"
    assert str(small.txn_id) not in hits
    assert_published_once(redis_sync, wsettings, rows)


def test_events_are_archived_with_their_stream_ids(
    wsettings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """Every published event lands in security_events under its stream id, data verbatim."""
    txns = [make_txn(user_id=f"u{i % 3}", amount=f"{50_000 * (i % 4) + 10}.00") for i in range(40)]
    enqueue(redis_sync, wsettings, txns)
    worker = start_role("worker", wsettings, "--drain")
    assert worker.proc.wait(60) == 0, worker.log()

    published = events(redis_sync, wsettings)
    assert len(published) >= len(txns)
    with psycopg.connect(wsettings.database_url) as conn:
        archived = {
            (ms, seq): (kind, txn_id, data)
            for ms, seq, kind, txn_id, data in conn.execute(
                "SELECT id_ms, id_seq, kind, txn_id::text, data FROM security_events"
            )
        }
    assert len(archived) == len(published)
    for entry_id, event, data in published:
        ms, _, seq = entry_id.partition("-")
        kind, txn_id, text = archived[(int(ms), int(seq))]
        assert (kind, txn_id) == (event.kind, event.txn_id)
        assert text.encode() == data


def test_entries_that_are_not_events_are_skipped_by_the_archive(
    wsettings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """A foreign or damaged entry on the events stream is logged and acknowledged, not
    archived, and does not hold back the well-formed events around it."""
    worker = start_role("worker", wsettings, "--drain")  # creates the archive group
    assert worker.proc.wait(60) == 0, worker.log()
    good = [make_txn(user_id="g1"), make_txn(user_id="g2")]
    enqueue(redis_sync, wsettings, good)
    stream = wsettings.event_stream
    foreign = [
        redis_sync.xadd(stream, {"kind": "decision", "txn": "not-a-uuid", "data": "{}"}),
        redis_sync.xadd(stream, {"note": "someone else's entry"}),
        redis_sync.xadd(stream, {"kind": "audit", "txn": str(good[0].txn_id), "data": "{}"}),
    ]
    worker = start_role("worker", wsettings, "--drain")
    assert worker.proc.wait(60) == 0, worker.log()

    published = {i.decode() for i, _ in redis_sync.xrange(stream)} - {i.decode() for i in foreign}
    assert len(published) == 2  # the two decisions (both APPROVED)
    with psycopg.connect(wsettings.database_url) as conn:
        archived = {
            f"{ms}-{seq}" for ms, seq in conn.execute("SELECT id_ms, id_seq FROM security_events")
        }
    assert archived == published
    assert redis_sync.xpending(stream, ARCHIVE_GROUP)["pending"] == 0
    log = worker.log()
    assert log.count("unarchivable event entry") == 3
    assert "not a transaction id: 'not-a-uuid'" in log
    assert "no 'kind' field" in log
    assert "not an event kind: 'audit'" in log


def test_blocklist_change_is_seen_within_five_seconds(
    wsettings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """A network added with core.blocklist.add blocks the next transaction from it."""
    before = make_txn(user_id="b1", source_ip="203.0.113.7")
    enqueue(redis_sync, wsettings, [before])
    start_role("worker", wsettings, "--consumer", "bl-1")
    wait_until(lambda: count_decided(wsettings) == 1, 30, "first decision")
    assert decided(wsettings)[str(before.txn_id)].status == "APPROVED"

    async def add() -> None:
        pool = await open_pool(wsettings)
        r = async_redis(wsettings)
        try:
            await blocklist.add(pool, r, wsettings, "203.0.113.0/24", reason="test")
        finally:
            await r.aclose()
            await pool.close()

    asyncio.run(add())
    added_at = time.monotonic()
    after = make_txn(user_id="b2", source_ip="203.0.113.9")
    enqueue(redis_sync, wsettings, [after])
    wait_until(lambda: count_decided(wsettings) == 2, 5, "decision after the blocklist change")
    assert time.monotonic() - added_at < 5
    row = decided(wsettings)[str(after.txn_id)]
    assert row.status == "BLOCKED"
    assert "203.0.113.0/24" in rule_hits(wsettings)[str(after.txn_id)]["ip_blocklist"]


def test_trimming_never_drops_unacked_entries(
    settings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """Streams are trimmed to about the retention, but never past an entry still pending."""
    s = dataclasses.replace(settings, stream_retention=20, worker_claim_idle_ms=600_000)
    asyncio.run(_create_group(s))
    # A consumer takes the first entry and never acks it (nobody reclaims within 10 min).
    (first_id,) = enqueue(redis_sync, s, [make_txn(user_id="ghost")])
    redis_sync.xreadgroup(TXN_GROUP, "ghost", {s.txn_stream: ">"}, count=1)
    start_role("worker", s, "--consumer", "trimmer-1")
    sent = [1]

    def trickle(done: Callable[[], bool]) -> Callable[[], bool]:
        # Trimming keeps pace with traffic (see fraud/_trim.py): keep a little flowing.
        def check() -> bool:
            enqueue(redis_sync, s, [make_txn(user_id=f"u{sent[0] % 7}")])
            sent[0] += 1
            return done()

        return check

    # Every event is archived and acked: the events stream shrinks towards the retention,
    # while the ghost's pending entry holds the transactions stream whole.
    wait_until(
        trickle(lambda: redis_sync.xlen(s.event_stream) < 100 and sent[0] > 150),
        30,
        "events stream trimmed",
    )
    assert redis_sync.xlen(s.txn_stream) == sent[0]
    assert redis_sync.xrange(s.txn_stream, count=1)[0][0].decode() == first_id

    redis_sync.xack(s.txn_stream, TXN_GROUP, first_id)
    wait_until(trickle(lambda: redis_sync.xlen(s.txn_stream) < 100), 30, "txns stream trimmed")
    total = sent[0]
    wait_until(lambda: count_decided(s) == total - 1, 30, "every transaction decided")
    wait_until(lambda: redis_sync.xpending(s.txn_stream, TXN_GROUP)["pending"] == 0, 10, "acks")
    assert redis_sync.xlen(s.txn_stream) >= s.stream_retention


async def _create_group(s: Settings) -> None:
    r = async_redis(s)
    try:
        await ensure_group(r, s.txn_stream, TXN_GROUP)
    finally:
        await r.aclose()


def test_lost_stream_is_recreated_and_work_goes_on(
    wsettings: Settings, redis_sync: redis.Redis, start_role: StartRole
) -> None:
    """If Redis loses the stream and its group (NOGROUP), the worker recreates them once,
    raises an alert in its log, and keeps deciding new transactions."""
    worker = start_role("worker", wsettings, "--consumer", "ng-1")
    enqueue(redis_sync, wsettings, [make_txn(user_id="n1")])
    wait_until(lambda: count_decided(wsettings) == 1, 30, "first decision")
    redis_sync.delete(wsettings.txn_stream)  # what a restart without persistence looks like
    wait_until(lambda: "consumer group missing" in worker.log(), 15, "the NOGROUP alert")
    later = make_txn(user_id="n2")
    enqueue(redis_sync, wsettings, [later])
    wait_until(lambda: count_decided(wsettings) == 2, 30, "decision after the recreation")
    assert worker.proc.poll() is None
    assert '"alert":true' in worker.log()


def test_rules_file_change_takes_effect_without_restart(
    wsettings: Settings, redis_sync: redis.Redis, start_role: StartRole, tmp_path: Path
) -> None:
    """Editing the rules file changes the decisions of a running worker within seconds;
    the worker's heartbeat file is kept fresh meanwhile."""
    rules = tmp_path / "rules.toml"
    rules.write_text("[merchants]\nluxury_goods = 30\n")
    s = dataclasses.replace(wsettings, rules_file=str(rules))
    start_role("worker", s, "--consumer", "rules-1")
    first = make_txn(user_id="r0", amount="10.00", merchant_type="luxury_goods")
    enqueue(redis_sync, s, [first])
    wait_until(lambda: count_decided(s) == 1, 30, "first decision")
    assert decided(s)[str(first.txn_id)].status == "APPROVED"

    rules.write_text("[merchants]\nluxury_goods = 100\n")
    probes: list[str] = []

    def probe_blocked() -> bool:
        probe = make_txn(
            user_id=f"r{len(probes) + 1}", amount="10.00", merchant_type="luxury_goods"
        )
        enqueue(redis_sync, s, [probe])
        probes.append(str(probe.txn_id))
        rows = decided(s)
        return any(rows.get(p, None) is not None and rows[p].status == "BLOCKED" for p in probes)

    wait_until(probe_blocked, 15, "a probe blocked under the new rules")
    heartbeat = Path(s.worker_heartbeat_file)
    assert time.time() - heartbeat.stat().st_mtime < 5
