"""What one accepted transaction costs Redis's memory, per kind of key.

docs/deploy.md sizes Redis from these figures (measured: idempotency key 184 bytes, stream
entry ~145, ledger member 154 in a busy user's skip list); the bounds leave room for
allocator noise, not for a format that grows unnoticed.
"""

from __future__ import annotations

from decimal import Decimal

from enqueue import make_txn
from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.core.activity import activity_key
from fintrack.ingest.handoff import HandOff, idempotency_key

USERS = 5
TRANSACTIONS = 1_000  # 200 per user: past 128 members a ledger is a skip list, the dearer kind


async def test_bytes_per_transaction_stay_within_the_documented_sizing(
    settings: Settings, redis_client: Redis
) -> None:
    txns = [
        make_txn(user_id=f"user_{n % USERS}", amount=str(Decimal("1234.56") + n))
        for n in range(TRANSACTIONS)
    ]
    handoff = HandOff(redis_client, settings)
    for start in range(0, TRANSACTIONS, 250):
        results = await handoff.submit_many(txns[start : start + 250])
        assert {r.outcome for r in results} == {"accepted"}

    sampled = txns[:: TRANSACTIONS // 50]
    idem = [
        await redis_client.memory_usage(idempotency_key(settings, str(t.txn_id))) for t in sampled
    ]
    per_key = sum(idem) / len(idem)
    stream = await redis_client.memory_usage(settings.txn_stream, samples=0)
    per_entry = stream / await redis_client.xlen(settings.txn_stream)
    ledgers = [activity_key(settings, f"user_{u}") for u in range(USERS)]
    ledger_bytes = sum([await redis_client.memory_usage(k, samples=0) for k in ledgers])
    members = sum([await redis_client.zcard(k) for k in ledgers])
    assert members == TRANSACTIONS
    assert await redis_client.object("encoding", ledgers[0]) in (b"skiplist", "skiplist")

    assert per_key <= 256, f"idempotency key: {per_key:.0f} bytes"
    assert per_entry <= 200, f"stream entry: {per_entry:.0f} bytes"
    assert ledger_bytes / members <= 200, f"ledger member: {ledger_bytes / members:.0f} bytes"
