"""The api as a real ``fintrack run api`` process (Granian): what only a server shows."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import psycopg
import pytest
import redis

from conftest import API_KEY, RoleProcess, free_port
from fintrack.config import Settings
from fintrack.core.models import transaction_decoder

SEED_CURL_BODY = '{"amount": 200000, "source_ip": "12.34.56.78"}'
ACME = {"Authorization": f"Bearer {API_KEY}"}
EXPORT_ROWS = int(os.environ.get("FINTRACK_TEST_EXPORT_ROWS", "200000"))
StartRole = Callable[..., RoleProcess]


@pytest.fixture
def sync_redis(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        client.close()


def _log_lines(api: RoleProcess) -> list[dict[str, object]]:
    lines = []
    for line in api.log().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_seed_curl_without_content_type_is_accepted_by_a_real_server(
    start_role: StartRole, settings: Settings, sync_redis: redis.Redis
) -> None:
    """The seed's curl (form Content-Type) and a body with no Content-Type → 202, one entry
    each; the access log has one line per request with its txn_id and never the API key."""
    api = start_role("api", settings)
    curl = subprocess.run(
        ["curl", "-sS", "-X", "POST", f"{api.base_url}/transactions",
         "-H", f"Authorization: Bearer {API_KEY}", "-d", SEED_CURL_BODY,
         "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    body, status = curl.stdout.rsplit("\n", 1)
    assert status == "202", curl.stdout
    assert sync_redis.xlen(settings.txn_stream) == 1

    bare = httpx.post(f"{api.base_url}/transactions", content=SEED_CURL_BODY, headers=ACME)
    assert "content-type" not in bare.request.headers
    assert bare.status_code == 202
    entries = sync_redis.xrange(settings.txn_stream)
    assert len(entries) == 2
    curl_txn = transaction_decoder.decode(entries[0][1][b"txn"])
    assert str(curl_txn.txn_id) == json.loads(body)["txn_id"]
    assert str(curl_txn.amount) == "200000.00"

    assert api.stop() == 0
    requests = [line for line in _log_lines(api) if line.get("event") == "request"]
    posts = [line for line in requests if line["path"] == "/transactions"]
    assert [line["txn_id"] for line in posts] == [str(curl_txn.txn_id), bare.json()["txn_id"]]
    for line in posts:
        assert line["method"] == "POST"
        assert line["status"] == 202
        assert isinstance(line["duration_ms"], float)
        assert line["request_id"]
    assert API_KEY not in api.log()


def test_chunked_oversized_body_is_refused_while_streaming(
    start_role: StartRole, settings: Settings, sync_redis: redis.Redis
) -> None:
    """A body over the limit without Content-Length (chunked) → 413 once the limit passes."""
    api = start_role("api", replace(settings, max_body_bytes=64 * 1024))

    def chunks() -> Iterator[bytes]:
        yield b'{"amount": 1, "source_ip": "1.2.3.4", "user_id": "'
        for _ in range(64):
            yield b"u" * 4096
        yield b'"}'

    response = httpx.post(f"{api.base_url}/transactions", content=chunks(), headers=ACME)

    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert sync_redis.exists(settings.txn_stream) == 0


async def test_concurrent_posts_with_redis_down_all_get_503_never_202(
    start_role: StartRole, settings: Settings
) -> None:
    """With Redis unreachable, concurrent POSTs (coalesced or not) all fail fast with 503."""
    api = start_role("api", replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    async with httpx.AsyncClient(base_url=api.base_url, headers=ACME, timeout=10) as client:
        started = time.monotonic()
        responses = await asyncio.gather(
            *(client.post("/transactions", content=SEED_CURL_BODY) for _ in range(20))
        )
        elapsed = time.monotonic() - started

    assert {r.status_code for r in responses} == {503}
    assert all(r.headers["retry-after"] == "1" for r in responses)
    assert elapsed < 5


def _tree_rss(pid: int) -> int:
    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def _copy_history(database_url: str, rows: int) -> None:
    """``rows`` decided transactions of client acme (and 1 % more of globex's), by COPY."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY transactions (txn_id, client_id, user_id, amount, currency, merchant_type,"
            " source_ip, status, risk_score, received_at, decided_at) FROM STDIN"
        ) as copy:
            for n in range(rows + rows // 100):
                at = start + timedelta(milliseconds=n)
                copy.write_row(
                    (uuid.uuid4(), "acme" if n < rows else "globex", f"user_{n % 997}",
                     f"{1000 + n % 50000}.{n % 100:02d}", "INR", "luxury_goods",
                     f"10.{n % 256}.{n // 256 % 256}.1", "FLAGGED" if n % 3 else "APPROVED",
                     40, at, at + timedelta(milliseconds=4))
                )  # fmt: skip
        cur.execute(
            "INSERT INTO rule_hits (txn_id, rule, score, reason)"
            " SELECT txn_id, 'velocity', 40, '7 transactions in 60 s, limit 5'"
            " FROM transactions WHERE status = 'FLAGGED'"
        )


@pytest.mark.slow
def test_history_export_streams_with_flat_memory(start_role: StartRole, settings: Settings) -> None:
    """Exporting 200,000 rows through a real server raises its RSS by less than 50 MB."""
    _copy_history(settings.database_url, EXPORT_ROWS)
    api = start_role("api", settings)
    warm = httpx.get(f"{api.base_url}/transactions", params={"user_id": "user_1"}, headers=ACME)
    assert warm.status_code == 200
    baseline = _tree_rss(api.proc.pid)
    peak, lines, chunks = baseline, 0, 0

    with httpx.stream("GET", f"{api.base_url}/transactions", headers=ACME, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        first = True
        for line in response.iter_lines():
            if first:
                row = json.loads(line)
                assert row["status"] in ("FLAGGED", "APPROVED")
                assert isinstance(row["amount"], str)
                first = False
            lines += 1
            if lines % 5000 == 0:
                chunks += 1
                peak = max(peak, _tree_rss(api.proc.pid))
    peak = max(peak, _tree_rss(api.proc.pid))

    growth_mb = (peak - baseline) / 2**20
    print(f"export: {lines} rows, RSS {baseline / 2**20:.1f} MB + {growth_mb:.1f} MB")
    assert lines == EXPORT_ROWS  # and none of globex's
    assert growth_mb < 50
