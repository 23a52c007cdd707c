"""Health, readiness, metrics, OpenAPI, and behaviour with Redis unreachable."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from conftest import API_KEY, free_port
from fintrack.config import Settings
from fintrack.ingest.app import create_app

ACME = {"Authorization": f"Bearer {API_KEY}"}
SEED = b'{"amount": 200000, "source_ip": "12.34.56.78"}'
Client = AsyncTestClient[Litestar]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def no_redis(settings: Settings) -> Settings:
    """Settings whose Redis URL points at a port nothing listens on."""
    return replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")


async def test_health_and_ready_need_no_auth_and_report_dependencies(client: Client) -> None:
    """/health is 200 while alive; /ready is 200 when Redis and PostgreSQL both answer."""
    health = await client.get("/health")
    ready = await client.get("/ready")

    assert (health.status_code, health.json()) == (200, {"status": "alive"})
    assert (ready.status_code, ready.json()) == (
        200,
        {"status": "ready", "redis": "ok", "postgres": "ok"},
    )


async def test_ready_is_503_naming_each_unreachable_dependency(no_redis: Settings) -> None:
    """/ready says which dependency is down: Redis alone, then PostgreSQL too."""
    async with AsyncTestClient(app=create_app(no_redis)) as client:
        redis_down = await client.get("/ready")
        health = await client.get("/health")
    no_pg = replace(no_redis, database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    async with AsyncTestClient(app=create_app(no_pg)) as client:
        both_down = await client.get("/ready")

    assert health.status_code == 200
    assert redis_down.status_code == 503
    assert redis_down.json() == {"status": "unavailable", "redis": "unavailable", "postgres": "ok"}
    assert both_down.status_code == 503
    assert both_down.json()["postgres"] == "unavailable"


async def test_redis_down_means_503_with_retry_after_quickly_and_no_202(
    no_redis: Settings,
) -> None:
    """Redis unreachable → 503 problem with Retry-After in about a second, single or batch."""
    async with AsyncTestClient(app=create_app(no_redis)) as client:
        started = time.monotonic()
        single = await client.post("/transactions", content=SEED, headers=ACME)
        single_s = time.monotonic() - started
        batch = await client.post("/transactions/batch", content=b"[" + SEED + b"]", headers=ACME)
        waiting = await client.post(
            "/transactions", content=SEED, headers=ACME | {"Prefer": "wait=1000"}
        )

    for response in (single, batch, waiting):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.headers["content-type"].startswith("application/problem+json")
    assert single_s < 2.5


async def test_redis_down_changes_nothing_in_postgresql(no_redis: Settings) -> None:
    """A refused hand-off leaves no trace anywhere: the database stays empty too."""
    async with AsyncTestClient(app=create_app(no_redis)) as client:
        await client.post("/transactions", content=SEED, headers=ACME)
    async with await psycopg.AsyncConnection.connect(no_redis.database_url) as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM transactions) + (SELECT count(*) FROM rule_hits)"
        )
        assert await cur.fetchone() == (0,)


async def test_metrics_expose_requests_latencies_and_transaction_counters(client: Client) -> None:
    """/metrics (no auth) has request counts and latencies by route, and ingest counters."""
    await client.post("/transactions", content=SEED, headers=ACME)
    await client.post("/transactions", content=b'{"amount": -1}', headers=ACME)
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "fintrack_api_requests_total",
        "fintrack_api_request_duration_seconds_bucket",
        "fintrack_api_transactions_enqueued_total",
        "fintrack_api_transactions_duplicate_total",
        'fintrack_api_transactions_rejected_total{reason="invalid"}',
        "fintrack_api_handoff_seconds_bucket",
    ):
        assert name in text, name
    assert 'path="/transactions"' in text  # grouped by route, not by raw path


async def test_openapi_describes_the_endpoints_without_a_cdn_ui(client: Client) -> None:
    """/schema/openapi.json documents every endpoint and the transaction body; no UI page."""
    response = await client.get("/schema/openapi.json")

    assert response.status_code == 200
    spec = response.json()
    paths = spec["paths"]
    assert set(paths["/transactions"]) == {"get", "post"}
    assert set(paths["/transactions/{txn_id}"]) == {"get"}
    assert set(paths["/admin/blocklist"]) == {"get", "post"}
    assert set(paths["/admin/blocklist/{network}"]) == {"delete"}
    assert {"/transactions/batch", "/health", "/ready", "/metrics"} <= set(paths)
    submit = paths["/transactions"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["amount", "source_ip"]
    assert body["additionalProperties"] is False
    assert body["properties"]["status"]["enum"] == ["PENDING"]
    assert {"200", "202", "409", "413", "422", "503"} <= set(submit["responses"])
    assert any(p["name"] == "Prefer" for p in submit["parameters"])
    batch = paths["/transactions/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"]["type"] == "array"
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    assert "cdn" not in response.text.lower()
    root = await client.get("/schema")
    assert root.headers["content-type"].startswith("application/")  # the JSON, no HTML page
    for page in ("/schema/swagger", "/schema/redoc", "/schema/elements"):
        assert (await client.get(page)).status_code == 404, page
