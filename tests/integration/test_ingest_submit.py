"""POST /transactions and /transactions/batch, GET while pending: hand-off, idempotency, auth."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from conftest import API_KEY, OTHER_API_KEY
from fintrack.config import Settings
from fintrack.core.activity import activity_key, decode_member, entry_score
from fintrack.core.models import transaction_decoder
from fintrack.ingest.app import create_app
from fintrack.ingest.handoff import idempotency_key

ACME = {"Authorization": f"Bearer {API_KEY}"}
GLOBEX = {"X-API-Key": OTHER_API_KEY}
SEED_FULL = {
    "txn_id": "0b6f3c9e-8a36-4a8e-9a59-1b9d1c6f2b11",
    "user_id": "user_123",
    "amount": 150000.00,
    "currency": "INR",
    "merchant_type": "luxury_goods",
    "source_ip": "192.168.1.50",
    "status": "PENDING",
}
SEED_MINIMAL = b'{"amount": 200000, "source_ip": "12.34.56.78"}'

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _entries(redis: Redis, settings: Settings) -> list[tuple[bytes, dict[bytes, bytes]]]:
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(settings.txn_stream)
    return entries


async def test_seed_full_example_is_accepted_and_enqueued_once(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """The seed's full example → 202 with its txn_id, Location, and exactly one stream entry."""
    response = await client.post("/transactions", json=SEED_FULL, headers=ACME)

    assert response.status_code == 202
    assert response.json() == {"txn_id": SEED_FULL["txn_id"], "status": "PENDING"}
    assert response.headers["location"] == f"/transactions/{SEED_FULL['txn_id']}"
    entries = await _entries(redis_client, settings)
    assert len(entries) == 1
    entry_id, fields = entries[0]
    txn = transaction_decoder.decode(fields[b"txn"])
    assert str(txn.txn_id) == SEED_FULL["txn_id"]
    assert (txn.user_id, txn.currency, txn.merchant_type) == ("user_123", "INR", "luxury_goods")
    assert txn.amount == Decimal("150000.00")
    assert str(txn.amount) == "150000.00"
    assert (txn.source_ip, txn.client_id) == ("192.168.1.50", "acme")
    # The activity ledger holds it, scored by its stream position.
    ledger = await redis_client.zrange(activity_key(settings, "user_123"), 0, -1, withscores=True)
    assert len(ledger) == 1
    activity = decode_member(*ledger[0])
    assert activity.score == entry_score(entry_id)
    assert (activity.txn_id, activity.amount) == (txn.txn_id, Decimal("150000.00"))
    ttl = await redis_client.ttl(idempotency_key(settings, SEED_FULL["txn_id"]))
    assert 0 < ttl <= settings.idempotency_ttl_s


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/json"},
    ],
    ids=["no-content-type", "form", "text", "json"],
)
async def test_seed_minimal_body_is_accepted_whatever_the_content_type(
    client: Client, redis_client: Redis, settings: Settings, headers: dict[str, str]
) -> None:
    """The quick-start body is read as JSON whatever Content-Type says; defaults fill gaps."""
    response = await client.post("/transactions", content=SEED_MINIMAL, headers=ACME | headers)

    assert response.status_code == 202, response.text
    txn_id = response.json()["txn_id"]
    assert uuid.UUID(txn_id).version == 4
    entries = await _entries(redis_client, settings)
    assert len(entries) == 1
    txn = transaction_decoder.decode(entries[0][1][b"txn"])
    assert str(txn.txn_id) == txn_id
    assert (txn.currency, txn.user_id, txn.merchant_type) == ("INR", "anonymous", "general")
    assert str(txn.amount) == "200000.00"


async def test_replay_with_same_body_repeats_the_answer_and_enqueues_nothing(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """Same txn_id, client and body (even spelled differently) → the same 202, one entry."""
    first = await client.post("/transactions", json=SEED_FULL, headers=ACME)
    # 150000 and 150000.00 are the same amount; reordered keys are the same body.
    same = dict(reversed(list(SEED_FULL.items()))) | {"amount": 150000}
    duplicates_before = _sample("fintrack_api_transactions_duplicate_total")
    second = await client.post("/transactions", json=same, headers=ACME)

    assert (second.status_code, second.json()) == (first.status_code, first.json())
    assert second.headers["location"] == first.headers["location"]
    assert len(await _entries(redis_client, settings)) == 1
    assert _sample("fintrack_api_transactions_duplicate_total") == duplicates_before + 1


async def test_same_txn_id_with_another_body_is_a_conflict(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """Same txn_id, different body → 409 problem naming txn_id; nothing more enqueued."""
    await client.post("/transactions", json=SEED_FULL, headers=ACME)
    response = await client.post(
        "/transactions", json=SEED_FULL | {"amount": 150000.01}, headers=ACME
    )

    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["title"] == "txn_id already used"
    assert problem["errors"] == [{"field": "txn_id", "message": "already used"}]
    assert len(await _entries(redis_client, settings)) == 1


async def test_same_txn_id_from_another_client_is_a_conflict(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """A txn_id is global: another client replaying it, even verbatim, gets 409, not 202."""
    await client.post("/transactions", json=SEED_FULL, headers=ACME)
    response = await client.post("/transactions", json=SEED_FULL, headers=GLOBEX)

    assert response.status_code == 409
    assert len(await _entries(redis_client, settings)) == 1


async def test_batch_accepts_good_items_and_reports_bad_ones(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """Mixed batch → one result per item in order; bad items don't stop good ones."""
    await client.post("/transactions", json=SEED_FULL, headers=ACME)
    rounds_before = _sample("fintrack_api_handoff_batch_size_sum")
    rejected = "fintrack_api_transactions_rejected_total"
    counters: list[tuple[str, dict[str, str] | None]] = [
        ("fintrack_api_transactions_enqueued_total", None),
        ("fintrack_api_transactions_duplicate_total", None),
        (rejected, {"reason": "invalid"}),
        (rejected, {"reason": "conflict"}),
    ]
    counted_before = [_sample(*counter) for counter in counters]
    batch = [
        {"amount": 10, "source_ip": "10.0.0.1"},
        {"amount": -5, "source_ip": "10.0.0.1"},
        SEED_FULL,  # a replay: duplicate
        SEED_FULL | {"amount": 1},  # same id, other body: conflict
        {"amount": 20, "source_ip": "not-an-ip"},
        "not an object",
        {"amount": 30, "source_ip": "2001:db8::1", "currency": "JPY"},
    ]
    response = await client.post("/transactions/batch", json=batch, headers=ACME)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(len(batch)))
    assert [r["status"] for r in results] == [
        "accepted",
        "error",
        "duplicate",
        "error",
        "error",
        "error",
        "accepted",
    ]
    assert results[1]["error"]["errors"][0]["field"] == "amount"
    assert results[1]["txn_id"] is None
    assert results[2]["txn_id"] == SEED_FULL["txn_id"]
    assert results[3]["error"]["status"] == 409
    assert results[4]["error"]["errors"][0]["field"] == "source_ip"
    assert results[5]["error"]["status"] == 422
    assert "error" not in results[0]
    entries = await _entries(redis_client, settings)
    assert len(entries) == 3  # the earlier single POST + two accepted items
    enqueued = {str(transaction_decoder.decode(f[b"txn"]).txn_id) for _, f in entries}
    assert {results[0]["txn_id"], results[6]["txn_id"]} <= enqueued
    # All four valid items went to Redis in one pipelined round trip.
    assert _sample("fintrack_api_handoff_batch_size_sum") - rounds_before == 4
    # Each item counted once, by outcome: 2 accepted, 1 duplicate, 3 invalid, 1 conflict.
    counted = [
        _sample(*counter) - before for counter, before in zip(counters, counted_before, strict=True)
    ]
    assert counted == [2, 1, 3, 1]


async def test_get_while_pending_then_404_for_unknown_and_other_clients(
    client: Client, settings: Settings
) -> None:
    """Before a decision the owner sees PENDING; an unknown id or another client gets 404."""
    txn_id = (await client.post("/transactions", content=SEED_MINIMAL, headers=ACME)).json()[
        "txn_id"
    ]

    mine = await client.get(f"/transactions/{txn_id}", headers=ACME)
    assert (mine.status_code, mine.json()) == (200, {"txn_id": txn_id, "status": "PENDING"})
    theirs = await client.get(f"/transactions/{txn_id}", headers=GLOBEX)
    assert theirs.status_code == 404
    assert theirs.headers["content-type"].startswith("application/problem+json")
    unknown = await client.get(f"/transactions/{uuid.uuid4()}", headers=ACME)
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {API_KEY}"},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "wrong-bearer", "wrong-scheme", "wrong-x-api-key", "empty"],
)
async def test_missing_or_wrong_api_key_is_401_without_enqueueing(
    client: Client, redis_client: Redis, settings: Settings, headers: dict[str, str]
) -> None:
    """No valid key → 401 problem with a Bearer challenge; nothing reaches Redis."""
    response = await client.post("/transactions", content=SEED_MINIMAL, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["detail"] == "missing or invalid credentials"
    assert await redis_client.exists(settings.txn_stream) == 0


async def test_insecure_open_mode_needs_no_key_and_calls_everyone_anonymous(
    settings: Settings, redis_client: Redis
) -> None:
    """With insecure_open the quick-start works without a key, as client "anonymous"."""
    async with AsyncTestClient(app=create_app(replace(settings, insecure_open=True))) as c:
        response = await c.post("/transactions", content=SEED_MINIMAL)
    assert response.status_code == 202
    entries = await _entries(redis_client, settings)
    assert transaction_decoder.decode(entries[0][1][b"txn"]).client_id == "anonymous"
