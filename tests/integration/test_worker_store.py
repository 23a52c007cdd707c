"""The worker's PostgreSQL writes: COPY for new rows of a large batch, the idempotent
statement for a small batch or one that holds stored rows, and text that needs escaping
either way. Every test runs both ways, on a pool set up as the worker's."""

from __future__ import annotations

import uuid
from decimal import Decimal

import msgspec
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.core.db import open_pool
from fintrack.core.events import Decision, RuleHit
from fintrack.core.models import Transaction
from fintrack.fraud import store
from fintrack.fraud._scripts import Scripts
from fintrack.fraud.store import ArchivedEvent, archive_events, commit_decisions


@pytest.fixture(params=["copy", "statement"])
def write_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """COPY from the first row, or the single statement for every batch."""
    monkeypatch.setattr(store, "COPY_MIN_ROWS", 1 if request.param == "copy" else 10**9)
    return str(request.param)


async def _worker_pool(settings: Settings) -> AsyncConnectionPool:
    return await open_pool(settings, max_size=2, autocommit=True, check=False)


AWKWARD = 'tab\there, new\nline, cr\r, back\\slash \\N, "quotes", {braces}, comma, é'


def _decision(user_id: str = "user_1", *, reason: str | None = None) -> Decision:
    txn = Transaction(
        txn_id=uuid.uuid4(),
        user_id=user_id,
        amount=Decimal("1234.50"),
        currency="INR",
        merchant_type="general",
        source_ip="2001:db8::1",
        client_id="acme",
        received_at_ms=1_700_000_000_123,
    )
    return Decision(
        txn=txn,
        status="FAILED" if reason else "FLAGGED",
        risk_score=0 if reason else 40,
        hits=() if reason else (RuleHit("velocity_count", 40, AWKWARD),),
        decided_at_ms=1_700_000_000_456,
        failure_reason=reason,
    )


async def test_commit_writes_text_exactly_and_keeps_the_first_decision(
    settings: Settings, write_path: str
) -> None:
    """Rows come back as given (escapes, NULL, timestamps, IPv6); a batch mixing new and
    stored transactions inserts the new ones and returns the stored decision for the rest."""
    pool = await _worker_pool(settings)
    try:
        first = [_decision(AWKWARD), _decision(reason=AWKWARD)]
        assert await commit_decisions(pool, first) == first
        again = msgspec.structs.replace(first[0], risk_score=99, hits=())  # a redelivery
        new = _decision()
        assert await commit_decisions(pool, [again, new]) == [first[0], new]
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT txn_id, user_id, source_ip::text, failure_reason, risk_score,"
                " (extract(epoch FROM received_at) * 1000)::bigint,"
                " (extract(epoch FROM decided_at) * 1000)::bigint, amount FROM transactions"
            )
            rows = {r[0]: r[1:] for r in await cur.fetchall()}
            cur = await conn.execute("SELECT txn_id, rule, score, reason FROM rule_hits")
            hits = await cur.fetchall()
        assert len(rows) == 3
        d = first[0]
        assert rows[d.txn.txn_id] == (
            AWKWARD,
            "2001:db8::1/128",
            None,
            40,
            1_700_000_000_123,
            1_700_000_000_456,
            Decimal("1234.50"),
        )
        assert rows[first[1].txn.txn_id][2] == AWKWARD
        assert sorted(hits) == sorted(
            [(x.txn.txn_id, "velocity_count", 40, AWKWARD) for x in (first[0], new)]
        )
    finally:
        await pool.close()


async def test_archive_copies_once_and_escapes(settings: Settings, write_path: str) -> None:
    """Events with awkward text are archived as given; archiving them again (with one new
    event) adds only the new one."""
    pool = await _worker_pool(settings)
    try:

        def event(seq: int) -> ArchivedEvent:
            return ArchivedEvent(
                id_ms=1_700_000_000_000,
                id_seq=seq,
                kind="alert",
                txn_id=str(uuid.uuid4()),
                data='{"reasons":[{"reason":"a \\"quoted\\" \\\\ reason\\n"}],"user":"'
                + AWKWARD
                + '"}',
            )

        events = [event(0), event(1), event(2)]
        assert await archive_events(pool, events[:2]) == 2
        assert await archive_events(pool, events) == 1
        assert await archive_events(pool, []) == 0
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id_seq, txn_id::text, data FROM security_events ORDER BY id_seq"
            )
            rows = await cur.fetchall()
        assert [r[0] for r in rows] == [0, 1, 2]
        for seq, txn_id, data in rows:
            assert (txn_id, data) == (events[seq].txn_id, events[seq].data)
    finally:
        await pool.close()


async def test_a_refused_row_fails_the_copy_like_the_statement(
    settings: Settings, write_path: str
) -> None:
    """A row PostgreSQL refuses still raises a data or integrity error, nothing written."""
    pool = await _worker_pool(settings)
    try:
        bad = _decision()
        bad = msgspec.structs.replace(bad, txn=msgspec.structs.replace(bad.txn, currency="TOOLONG"))
        try:
            await commit_decisions(pool, [_decision(), bad])
        except (psycopg.DataError, psycopg.IntegrityError):
            pass
        else:
            raise AssertionError("the bad row was accepted")
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM transactions")
            assert await cur.fetchone() == (0,)
    finally:
        await pool.close()


async def test_acking_many_ids_in_one_script(settings: Settings, redis_client: Redis) -> None:
    """``Scripts.ack`` takes any number of ids (in chunks below Lua's unpack limit) and
    counts only those that were pending."""
    stream = f"{settings.key_prefix}:ack-test"
    async with redis_client.pipeline(transaction=False) as pipe:
        for i in range(2_500):
            pipe.xadd(stream, {"n": str(i)})
        ids = [entry_id.decode() for entry_id in await pipe.execute()]
    await redis_client.xgroup_create(stream, "g", id="0")
    await redis_client.xreadgroup("g", "c", {stream: ">"}, count=2_000)  # 2,000 pending
    scripts = Scripts(redis_client)
    assert await scripts.ack(stream=stream, group="g", ids=ids) == 2_000
    assert (await redis_client.xpending(stream, "g"))["pending"] == 0
    assert await scripts.ack(stream=stream, group="g", ids=ids[:10]) == 0
    assert await scripts.ack(stream=stream, group="g", ids=[]) == 0
