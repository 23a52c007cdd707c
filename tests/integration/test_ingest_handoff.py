"""The hand-off script and its batching, against real Redis (and a private Valkey)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from conftest import free_port
from fintrack.config import Settings
from fintrack.core.activity import activity_key, entry_score
from fintrack.core.embedded import EmbeddedValkey
from fintrack.core.errors import UnavailableError
from fintrack.core.models import Transaction, transaction_decoder, transaction_encoder
from fintrack.core.streams import redis_client as make_client
from fintrack.ingest.handoff import (
    Coalescer,
    HandOff,
    fingerprint,
    idempotency_key,
    payload_fingerprint,
)


def _txn(n: int = 0, **changes: object) -> Transaction:
    txn = Transaction(
        txn_id=uuid.uuid4(),
        user_id="user_1",
        amount=Decimal("100.00") + n,
        currency="INR",
        merchant_type="general",
        source_ip="10.0.0.1",
        client_id="acme",
        received_at_ms=1_700_000_000_000 + n,
    )
    return msgspec.structs.replace(txn, **changes)


def _rounds() -> tuple[float, float]:
    """(round trips, transactions) sent so far by every HandOff in this process."""
    count = REGISTRY.get_sample_value("fintrack_api_handoff_batch_size_count") or 0.0
    total = REGISTRY.get_sample_value("fintrack_api_handoff_batch_size_sum") or 0.0
    return count, total


async def test_one_call_is_one_round_trip_with_one_result_per_transaction(
    settings: Settings, redis_client: Redis
) -> None:
    """submit_many sends every script in one pipeline; replays in the same call are caught."""
    handoff = HandOff(redis_client, settings)
    first, second = _txn(1), _txn(2)
    before = _rounds()

    results = await handoff.submit_many([first, second, first, _txn(3, txn_id=first.txn_id)])

    assert [r.outcome for r in results] == ["accepted", "accepted", "duplicate", "conflict"]
    assert _rounds() == (before[0] + 1, before[1] + 4)
    entries = await redis_client.xrange(settings.txn_stream)
    assert [e[0].decode() for e in entries] == [results[0].entry_id, results[1].entry_id]
    assert [transaction_decoder.decode(e[1][b"txn"]) for e in entries] == [first, second]
    stored = await redis_client.get(idempotency_key(settings, str(first.txn_id)))
    assert stored == f"acme|{fingerprint(first)}".encode()


async def test_fingerprint_ignores_arrival_time_only(settings: Settings) -> None:
    """The same transaction arriving later is the same body; any other change is not."""
    txn = _txn()
    assert fingerprint(txn) == fingerprint(_txn(0, txn_id=txn.txn_id, received_at_ms=1))
    for change in ({"amount": Decimal("100.01")}, {"user_id": "u2"}, {"client_id": "globex"}):
        assert fingerprint(txn) != fingerprint(msgspec.structs.replace(txn, **change))


async def test_activity_ledger_is_scored_by_stream_position_and_trimmed(
    settings: Settings, redis_client: Redis
) -> None:
    """The script scores the ledger like entry_score, drops members past 2× retention, and
    sets the ledger to expire after 2× retention."""
    short = replace(settings, activity_retention_s=60)
    key = activity_key(short, "user_1")
    await redis_client.zadd(key, {"ancient|1|INR": 1_000})  # far older than 2 × 60 s
    handoff = HandOff(redis_client, short)

    results = await handoff.submit_many([_txn(1), _txn(2)])

    members = await redis_client.zrange(key, 0, -1, withscores=True)
    assert [int(score) for _, score in members] == [entry_score(r.entry_id or "") for r in results]
    assert 0 < await redis_client.pttl(key) <= 120_000


async def test_coalescer_shares_round_trips_between_concurrent_submissions(
    settings: Settings, redis_client: Redis
) -> None:
    """50 concurrent single submissions are all accepted in far fewer than 50 round trips."""
    coalescer = Coalescer(HandOff(redis_client, settings))
    coalescer.start()
    before = _rounds()
    try:
        results = await asyncio.gather(*(coalescer.submit(_txn(n)) for n in range(50)))
    finally:
        await coalescer.stop()

    assert [r.outcome for r in results] == ["accepted"] * 50
    rounds, sent = (now - then for now, then in zip(_rounds(), before, strict=True))
    assert sent == 50
    assert rounds <= 5
    assert await redis_client.xlen(settings.txn_stream) == 50


async def test_failed_round_trip_fails_every_caller_in_it(settings: Settings) -> None:
    """Redis unreachable → every coalesced caller gets UnavailableError, none a result."""
    dead = make_client(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    coalescer = Coalescer(HandOff(dead, settings))
    coalescer.start()
    try:
        outcomes = await asyncio.gather(
            *(coalescer.submit(_txn(n)) for n in range(10)), return_exceptions=True
        )
    finally:
        await coalescer.stop()
        await dead.aclose()

    assert all(isinstance(o, UnavailableError) for o in outcomes), outcomes


async def test_stopped_coalescer_refuses_submissions(settings: Settings) -> None:
    """After stop() (shutdown), a submission is refused rather than left hanging."""
    client = make_client(settings)
    coalescer = Coalescer(HandOff(client, settings))
    coalescer.start()
    await coalescer.stop()
    try:
        with pytest.raises(UnavailableError):
            await coalescer.submit(_txn())
    finally:
        await client.aclose()


@pytest.fixture
def private_valkey(tmp_path: Path) -> Iterator[str]:
    """A Valkey server of this test's own, for commands that would disturb shared Redis."""
    with EmbeddedValkey(tmp_path / "valkey") as valkey:
        yield valkey.url


async def test_script_is_reloaded_after_redis_forgets_it(
    settings: Settings, private_valkey: str
) -> None:
    """After SCRIPT FLUSH (or a restart) the hand-off reloads its script and still works."""
    private = replace(settings, redis_url=private_valkey)
    client = make_client(private)
    try:
        handoff = HandOff(client, private)
        assert (await handoff.submit_many([_txn(1)]))[0].outcome == "accepted"
        await client.script_flush()
        results = await handoff.submit_many([_txn(2), _txn(3)])
        assert [r.outcome for r in results] == ["accepted", "accepted"]
        assert await client.xlen(private.txn_stream) == 3
    finally:
        await client.aclose()


def test_the_payload_fingerprint_is_the_fingerprint_of_the_timeless_transaction() -> None:
    """The hand-off fingerprints the encoded payload it sends: the same SHA-256 as the
    transaction with arrival time 0 encoded on its own (keys stored before stay valid)."""
    for txn in (_txn(0), _txn(1, received_at_ms=1), _txn(2, received_at_ms=10**15)):
        timeless = msgspec.structs.replace(txn, received_at_ms=0)
        expected = hashlib.sha256(transaction_encoder.encode(timeless)).hexdigest()
        assert payload_fingerprint(transaction_encoder.encode(txn)) == expected
        assert fingerprint(txn) == expected


async def test_an_item_redis_refuses_out_of_memory_leaves_nothing_behind(
    settings: Settings, private_valkey: str
) -> None:
    """Over maxmemory (noeviction) the item fails and writes nothing: no idempotency claim
    (a retry would otherwise be answered as a duplicate of nothing), no entry, no ledger."""
    private = replace(settings, redis_url=private_valkey)
    client = make_client(private)
    txn = _txn(1)
    try:
        handoff = HandOff(client, private)
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", "1")
        try:
            (refused,) = await handoff.submit_many([txn])
        finally:
            await client.config_set("maxmemory", "0")

        assert refused.outcome == "failed"
        idem = idempotency_key(private, str(txn.txn_id))
        ledger = activity_key(private, txn.user_id)
        assert await client.exists(idem, ledger, private.txn_stream) == 0
        assert [r.outcome for r in await handoff.submit_many([txn])] == ["accepted"]
    finally:
        await client.aclose()


async def test_an_item_whose_append_is_refused_gives_its_claim_back(
    settings: Settings, redis_client: Redis
) -> None:
    """The idempotency key is claimed before the append: if Redis then refuses the append
    (here the stream's key holds a string), the claim is deleted and the item fails."""
    await redis_client.set(settings.txn_stream, "not a stream")
    txn = _txn(1)

    (refused,) = await HandOff(redis_client, settings).submit_many([txn])

    assert refused.outcome == "failed"
    idem = idempotency_key(settings, str(txn.txn_id))
    assert await redis_client.exists(idem, activity_key(settings, txn.user_id)) == 0
    await redis_client.delete(settings.txn_stream)
    assert [r.outcome for r in await HandOff(redis_client, settings).submit_many([txn])] == [
        "accepted"
    ]
