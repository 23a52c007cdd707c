"""Per-API-key rate limits: exact (N taken, N+1 refused with 429 and Retry-After), shared
by every api replica through Redis, per client, for single, batch and read requests."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from conftest import API_KEY, OTHER_API_KEY, RoleProcess
from fintrack.config import Settings
from fintrack.ingest.app import create_app

ACME = {"Authorization": f"Bearer {API_KEY}"}
GLOBEX = {"Authorization": f"Bearer {OTHER_API_KEY}"}
BODY = b'{"amount": 10, "source_ip": "1.2.3.4"}'
LIMIT = 5
WINDOW_S = 60.0  # long: no token comes back while a test runs, unless it waits for one
Client = AsyncTestClient[Litestar]


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return replace(settings, rate_limit=LIMIT, rate_window_s=WINDOW_S)


@pytest.fixture
async def client(limited: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(limited)) as test_client:
        yield test_client


async def test_limit_is_shared_by_replicas_and_exact_under_concurrency(
    start_role: Callable[..., RoleProcess], limited: Settings, redis_client: Redis
) -> None:
    """Three times the limit sent at once, spread over two api processes: exactly LIMIT
    are taken, the rest get 429 with Retry-After; the other client is not affected."""
    replicas = [start_role("api", limited), start_role("api", limited)]
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(
            *(
                http.post(f"{replicas[i % 2].base_url}/transactions", content=BODY, headers=ACME)
                for i in range(3 * LIMIT)
            )
        )
        other = await http.post(
            f"{replicas[0].base_url}/transactions", content=BODY, headers=GLOBEX
        )

    statuses = sorted(r.status_code for r in answers)
    assert statuses == [202] * LIMIT + [429] * (2 * LIMIT)
    for refused in (r for r in answers if r.status_code == 429):
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == "urn:fintrack:problem:rate-limited"
        # One token comes back every WINDOW_S / LIMIT seconds.
        assert 1 <= int(refused.headers["retry-after"]) <= math.ceil(WINDOW_S / LIMIT)
    assert other.status_code == 202
    assert await redis_client.xlen(limited.txn_stream) == LIMIT + 1


async def test_batch_items_count_one_each(client: Client, limited: Settings) -> None:
    """A batch larger than the budget: the first LIMIT items are taken, the others get a 429
    problem each, and the response says when to retry."""
    batch = b"[" + b",".join([BODY] * (LIMIT + 2)) + b"]"

    response = await client.post("/transactions/batch", content=batch, headers=ACME)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * LIMIT + ["error"] * 2
    assert {r["error"]["status"] for r in results[LIMIT:]} == {429}
    assert int(response.headers["retry-after"]) >= 1
    single = await client.post("/transactions", content=BODY, headers=ACME)
    assert single.status_code == 429


async def test_reads_count_too(client: Client) -> None:
    """Reads spend the same budget: LIMIT answers, then 429 (writes refused as well)."""
    unknown = "/transactions/5f0c6a57-9d9e-4f55-a1b0-2f1c1c3f0a01"
    answers = [await client.get(unknown, headers=ACME) for _ in range(LIMIT + 1)]

    assert [r.status_code for r in answers] == [404] * LIMIT + [429]
    assert (await client.get("/transactions", headers=ACME)).status_code == 429
    assert (await client.post("/transactions", content=BODY, headers=ACME)).status_code == 429
    assert (await client.get(unknown, headers=GLOBEX)).status_code == 404


async def test_tokens_come_back_at_the_configured_rate(settings: Settings) -> None:
    """After a burst, one more request is taken per window/limit, not before."""
    fast = replace(settings, rate_limit=2, rate_window_s=0.5)
    async with AsyncTestClient(app=create_app(fast)) as client:
        burst = [await client.post("/transactions", content=BODY, headers=ACME) for _ in range(3)]
        assert [r.status_code for r in burst] == [202, 202, 429]
        loop = asyncio.get_running_loop()
        refused_at = loop.time()
        async with asyncio.timeout(5):
            while (
                await client.post("/transactions", content=BODY, headers=ACME)
            ).status_code != 202:
                await asyncio.sleep(0.02)
        waited = loop.time() - refused_at
        again = await client.post("/transactions", content=BODY, headers=ACME)

    # A token every 0.25 s: the next one came (well within a second), and it came alone.
    assert waited < 1.0
    assert again.status_code == 429


async def test_no_limit_when_off(settings: Settings) -> None:
    """FINTRACK_RATE_LIMIT=0 (the default) never answers 429 and keeps no bucket."""
    async with AsyncTestClient(app=create_app(settings)) as client:
        answers = [
            await client.post("/transactions", content=BODY, headers=ACME) for _ in range(20)
        ]
    assert {r.status_code for r in answers} == {202}
