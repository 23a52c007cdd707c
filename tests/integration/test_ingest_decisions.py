"""Reading decisions back: GET once decided, ``Prefer: wait``, and the NDJSON export.

No worker runs here: ``_decide`` does what a worker does after deciding (commit the row and
its rule hits to PostgreSQL, then publish the events), from the real stream entry. Requests
go through httpx's ASGI transport in the test's own event loop: Litestar's AsyncTestClient
runs the app in a portal thread and blocks the loop per request, so a test could not act
while a ``Prefer: wait`` request is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import psycopg
import pytest
from redis.asyncio import Redis

from conftest import API_KEY, OTHER_API_KEY
from fintrack.config import Settings
from fintrack.core.events import Decision, RuleHit, events_for, stream_fields
from fintrack.core.models import Status, Transaction, transaction_decoder
from fintrack.ingest.app import create_app

ACME = {"Authorization": f"Bearer {API_KEY}"}
GLOBEX = {"X-API-Key": OTHER_API_KEY}
HITS = (
    RuleHit("velocity", 40, "7 transactions in 60 s, limit 5"),
    RuleHit("merchant", 25, "risky merchant category luxury_goods"),
)
Client = httpx.AsyncClient


@contextlib.asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[Client]:
    """The app with its lifespan running, reached in-process over httpx."""
    app = create_app(settings)
    started, stopping = asyncio.Event(), asyncio.Event()

    async def run_lifespan() -> None:
        # Its own task: the lifespan's anyio cancel scope must exit in the task that
        # entered it, and pytest-asyncio may tear fixtures down in another.
        async with app.lifespan():
            started.set()
            await stopping.wait()

    lifespan = asyncio.create_task(run_lifespan())
    ready = asyncio.create_task(started.wait())
    done, _ = await asyncio.wait([lifespan, ready], timeout=10, return_when="FIRST_COMPLETED")
    ready.cancel()
    if lifespan in done:
        await lifespan  # it failed to start: raise why
    assert started.is_set(), "the app did not start in 10 s"
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client
    finally:
        stopping.set()
        await lifespan


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with _serve(settings) as test_client:
        yield test_client


async def _eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def _enqueued(redis: Redis, settings: Settings, txn_id: str) -> Transaction:
    """The transaction as the api put it on the stream (waits for it to get there)."""
    found: list[Transaction] = []

    async def on_stream() -> bool:
        for _, fields in await redis.xrange(settings.txn_stream):
            txn = transaction_decoder.decode(fields[b"txn"])
            if str(txn.txn_id) == txn_id:
                found.append(txn)
                return True
        return False

    await _eventually(on_stream, 5, f"{txn_id} on the stream")
    return found[0]


async def _decide(
    settings: Settings,
    redis: Redis,
    txn: Transaction,
    status: Status = "FLAGGED",
    *,
    publish: bool = True,
    failure: str | None = None,
) -> Decision:
    decision = Decision(
        txn=txn,
        status=status,
        risk_score=sum(h.score for h in HITS),
        hits=HITS,
        decided_at_ms=txn.received_at_ms + 3,
        failure_reason=failure,
    )
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        await conn.execute(
            "INSERT INTO transactions (txn_id, client_id, user_id, amount, currency,"
            " merchant_type, source_ip, status, risk_score, received_at, decided_at,"
            " failure_reason) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
            " to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), %s)",
            (
                txn.txn_id,
                txn.client_id,
                txn.user_id,
                txn.amount,
                txn.currency,
                txn.merchant_type,
                txn.source_ip,
                status,
                decision.risk_score,
                txn.received_at_ms,
                decision.decided_at_ms,
                failure,
            ),
        )
        for hit in HITS:
            await conn.execute(
                "INSERT INTO rule_hits (txn_id, rule, score, reason) VALUES (%s, %s, %s, %s)",
                (txn.txn_id, hit.rule, hit.score, hit.reason),
            )
    if publish:
        for event in events_for(decision):
            await redis.xadd(settings.event_stream, stream_fields(event))  # type: ignore[arg-type]
    return decision


def _seed(txn_id: str, **fields: object) -> dict[str, object]:
    return {
        "txn_id": txn_id,
        "user_id": "user_123",
        "amount": 150000.00,
        "currency": "INR",
        "merchant_type": "luxury_goods",
        "source_ip": "192.168.1.50",
    } | fields


async def test_get_after_decision_shows_status_score_reasons_and_times(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """Once the decision row exists, GET returns it in full; other clients still get 404."""
    txn_id = str(uuid.uuid4())
    await client.post("/transactions", json=_seed(txn_id), headers=ACME)
    pending = await client.get(f"/transactions/{txn_id}", headers=ACME)
    assert pending.json() == {"txn_id": txn_id, "status": "PENDING"}

    txn = await _enqueued(redis_client, settings, txn_id)
    await _decide(settings, redis_client, txn, publish=False)
    decided = await client.get(f"/transactions/{txn_id}", headers=ACME)

    assert decided.status_code == 200
    assert decided.json() == {
        "txn_id": txn_id,
        "status": "FLAGGED",
        "risk_score": 65,
        "reasons": [
            {"rule": "velocity", "score": 40, "reason": "7 transactions in 60 s, limit 5"},
            {"rule": "merchant", "score": 25, "reason": "risky merchant category luxury_goods"},
        ],
        "amount": "150000.00",
        "currency": "INR",
        "user_id": "user_123",
        "merchant_type": "luxury_goods",
        "source_ip": "192.168.1.50",
        "received_at": datetime.fromtimestamp(txn.received_at_ms / 1000, UTC).isoformat(
            timespec="milliseconds"
        ),
        "decided_at": datetime.fromtimestamp((txn.received_at_ms + 3) / 1000, UTC).isoformat(
            timespec="milliseconds"
        ),
        "failure_reason": None,
    }
    assert (await client.get(f"/transactions/{txn_id}", headers=GLOBEX)).status_code == 404


async def test_prefer_wait_answers_200_with_the_decision_when_it_comes_in_time(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """`Prefer: wait=MS` → 200 with the GET body and Preference-Applied once decided."""
    txn_id = str(uuid.uuid4())
    posting = asyncio.create_task(
        client.post("/transactions", json=_seed(txn_id), headers=ACME | {"Prefer": "wait=4000"})
    )
    txn = await _enqueued(redis_client, settings, txn_id)
    started = time.monotonic()
    await _decide(settings, redis_client, txn, "BLOCKED")
    response = await posting

    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=4000"
    assert time.monotonic() - started < 3  # woken by the event, not by the deadline
    shown = (await client.get(f"/transactions/{txn_id}", headers=ACME)).json()
    assert response.json() == shown
    assert shown["status"] == "BLOCKED"


async def test_prefer_wait_answers_202_when_the_decision_is_late(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """No decision within MS → the usual 202 after about MS, and the txn is still queued."""
    started = time.monotonic()
    response = await client.post(
        "/transactions", json=_seed(str(uuid.uuid4())), headers=ACME | {"Prefer": "wait=300"}
    )

    assert response.status_code == 202
    assert "preference-applied" not in response.headers
    assert time.monotonic() - started >= 0.3
    assert await redis_client.xlen(settings.txn_stream) == 1


async def test_prefer_wait_finds_a_committed_decision_whose_event_it_missed(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """A decision committed but not (yet) published is still found by the final DB check."""
    txn_id = str(uuid.uuid4())
    posting = asyncio.create_task(
        client.post("/transactions", json=_seed(txn_id), headers=ACME | {"Prefer": "wait=600"})
    )
    txn = await _enqueued(redis_client, settings, txn_id)
    await _decide(settings, redis_client, txn, "APPROVED", publish=False)
    response = await posting

    assert response.status_code == 200
    assert response.json()["status"] == "APPROVED"


async def test_prefer_wait_is_capped_by_max_wait_ms(
    settings: Settings, redis_client: Redis
) -> None:
    """A wait above max_wait_ms is cut to it; an unreadable Prefer is ignored."""
    async with _serve(replace(settings, max_wait_ms=200)) as client:
        started = time.monotonic()
        capped = await client.post(
            "/transactions",
            json=_seed(str(uuid.uuid4())),
            headers=ACME | {"Prefer": "respond-async, wait=600000"},
        )
        capped_s = time.monotonic() - started
        ignored = await client.post(
            "/transactions", json=_seed(str(uuid.uuid4())), headers=ACME | {"Prefer": "wait=x"}
        )

    assert capped.status_code == 202
    assert 0.2 <= capped_s < 5
    assert ignored.status_code == 202


async def test_concurrent_waiters_each_get_their_own_decision(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """Many waiting POSTs share one tail; each is woken by its own transaction's event."""
    ids = [str(uuid.uuid4()) for _ in range(8)]
    postings = [
        asyncio.create_task(
            client.post(
                "/transactions",
                json=_seed(txn_id),
                headers=ACME | {"Prefer": "wait=4000" if n < 4 else "wait=500"},
            )
        )
        for n, txn_id in enumerate(ids)
    ]
    statuses: list[Status] = ["APPROVED", "FLAGGED", "BLOCKED", "FAILED"]
    for n, txn_id in enumerate(ids[:4]):  # only half get decided
        txn = await _enqueued(redis_client, settings, txn_id)
        await _decide(settings, redis_client, txn, statuses[n])
    decided = await asyncio.gather(*postings[:4])
    assert [r.json()["status"] for r in decided] == statuses
    late = await asyncio.gather(*postings[4:])
    assert [r.status_code for r in late] == [202] * 4


async def _export(
    client: Client, headers: dict[str, str], **params: str
) -> list[dict[str, object]]:
    response = await client.get("/transactions", params=params, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [msgspec.json.decode(line) for line in response.content.splitlines()]


async def test_export_streams_own_history_as_ndjson_with_filters(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """GET /transactions: own decided transactions, oldest first, filtered as asked."""
    decided: list[tuple[str, Status, str]] = []
    for n, (status, user) in enumerate(
        [("APPROVED", "alice"), ("FLAGGED", "bob"), ("BLOCKED", "alice"), ("APPROVED", "bob")]
    ):
        txn_id = str(uuid.uuid4())
        await client.post(
            "/transactions", json=_seed(txn_id, user_id=user, amount=100 + n), headers=ACME
        )
        txn = await _enqueued(redis_client, settings, txn_id)
        await _decide(settings, redis_client, txn, status, publish=False)
        decided.append((txn_id, status, user))
    other = str(uuid.uuid4())
    await client.post("/transactions", json=_seed(other), headers=GLOBEX)
    await _decide(settings, redis_client, await _enqueued(redis_client, settings, other))

    everything = await _export(client, ACME)
    assert [row["txn_id"] for row in everything] == [d[0] for d in decided]
    single = (await client.get(f"/transactions/{decided[0][0]}", headers=ACME)).json()
    assert everything[0] == single
    bob = await _export(client, ACME, user_id="bob")
    assert [row["txn_id"] for row in bob] == [decided[1][0], decided[3][0]]
    approved = await _export(client, ACME, status="APPROVED")
    assert [row["txn_id"] for row in approved] == [decided[0][0], decided[3][0]]
    now = datetime.now(UTC)
    assert await _export(client, ACME, since=(now + timedelta(hours=1)).isoformat()) == []
    window = await _export(
        client,
        ACME,
        since=(now - timedelta(hours=1)).isoformat(),
        until=(now + timedelta(hours=1)).replace(tzinfo=None).isoformat(),
    )
    assert len(window) == 4
    assert [row["txn_id"] for row in await _export(client, GLOBEX)] == [other]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "0.5"}, "until"),
        ({"status": "PENDING"}, "status"),
        ({"user_id": "u" * 65}, "user_id"),
        ({"user_id": ["alice", "bob"]}, "user_id"),
        ({"status": ["APPROVED", "BLOCKED"]}, "status"),
    ],
)
async def test_export_refuses_bad_filters_naming_them(
    client: Client, params: dict[str, str | list[str]], field: str
) -> None:
    """Unreadable times, a status never stored, an overlong or repeated filter → 422
    naming the filter."""
    response = await client.get("/transactions", params=params, headers=ACME)

    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]
