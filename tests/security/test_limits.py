"""Resource limits, each at its limit (taken) and one past it (refused, nothing changed).

Batch size and SSE clients per process are tested where their features are:
``test_ingest_validation.py::test_oversized_batch_is_refused_before_items_are_decoded`` and
``test_notify_protocol.py::test_client_limit_answers_503_with_retry_after``.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from urllib.parse import urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from conftest import API_KEY, RoleProcess
from fintrack.config import Settings
from fintrack.ingest.app import create_app
from fintrack.ingest.limits import json_depth

ACME = {"Authorization": f"Bearer {API_KEY}"}
Client = AsyncTestClient[Litestar]


@pytest.fixture
def limited(settings: Settings) -> Settings:
    return replace(settings, max_body_bytes=1_000, max_json_depth=4, max_text_length=10)


@pytest.fixture
async def client(limited: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(limited)) as test_client:
        yield test_client


async def _entries(redis: Redis, settings: Settings) -> int:
    return int(await redis.xlen(settings.txn_stream))


def _padded(body: bytes, size: int) -> bytes:
    """``body`` with trailing JSON whitespace up to exactly ``size`` bytes."""
    assert len(body) <= size
    return body + b" " * (size - len(body))


async def test_body_size_limit(client: Client, limited: Settings, redis_client: Redis) -> None:
    """A body of exactly FINTRACK_MAX_BODY_BYTES is taken; one byte more is a 413."""
    body = b'{"amount": 10, "source_ip": "1.2.3.4"}'
    at_limit = await client.post(
        "/transactions", content=_padded(body, limited.max_body_bytes), headers=ACME
    )
    over = await client.post(
        "/transactions", content=_padded(body, limited.max_body_bytes + 1), headers=ACME
    )

    assert at_limit.status_code == 202
    assert over.status_code == 413
    assert over.headers["content-type"] == "application/problem+json"
    assert await _entries(redis_client, limited) == 1


@pytest.mark.parametrize("field", ["user_id", "merchant_type"])
async def test_text_length_limit(
    client: Client, limited: Settings, redis_client: Redis, field: str
) -> None:
    """user_id/merchant_type of FINTRACK_MAX_TEXT_LENGTH characters are taken; one more: 422."""

    def body(length: int) -> dict[str, object]:
        return {"amount": 10, "source_ip": "1.2.3.4", field: "x" * length}

    at_limit = await client.post("/transactions", json=body(limited.max_text_length), headers=ACME)
    over = await client.post("/transactions", json=body(limited.max_text_length + 1), headers=ACME)

    assert at_limit.status_code == 202
    assert over.status_code == 422
    assert [e["field"] for e in over.json()["errors"]] == [field]
    assert await _entries(redis_client, limited) == 1
    schema = await client.get("/schema/openapi.json")
    body_schema = schema.json()["paths"]["/transactions"]["post"]["requestBody"]
    properties = body_schema["content"]["application/json"]["schema"]["properties"]
    assert properties[field]["maxLength"] == limited.max_text_length


def _nested(depth: int) -> str:
    """A JSON value nesting ``depth`` arrays."""
    return "[" * depth + "1" + "]" * depth


async def test_json_depth_limit_on_a_transaction(
    client: Client, limited: Settings, redis_client: Redis
) -> None:
    """Nesting up to FINTRACK_MAX_JSON_DEPTH is parsed (and refused as a bad field, 422);
    one level more is refused unread as malformed (400)."""
    at_limit = f'{{"amount": {_nested(limited.max_json_depth - 1)}, "source_ip": "1.2.3.4"}}'
    over = f'{{"amount": {_nested(limited.max_json_depth)}, "source_ip": "1.2.3.4"}}'
    assert json_depth(at_limit.encode()) == limited.max_json_depth

    at = await client.post("/transactions", content=at_limit, headers=ACME)
    deep = await client.post("/transactions", content=over, headers=ACME)

    assert (at.status_code, at.json()["errors"][0]["field"]) == (422, "amount")
    assert deep.status_code == 400
    assert f"deeper than {limited.max_json_depth}" in deep.json()["detail"]
    assert await _entries(redis_client, limited) == 0


async def test_json_depth_limit_on_a_batch(
    client: Client, limited: Settings, redis_client: Redis
) -> None:
    """A batch nesting to the limit gets per-item answers; one level deeper: a 400 for all."""
    good = '{"amount": 1, "source_ip": "1.2.3.4"}'
    bad = '{"amount": 1, "source_ip": "1.2.3.4", "x": %s}'
    at_limit = f"[{good}, {bad % _nested(limited.max_json_depth - 2)}]"
    over = f"[{good}, {bad % _nested(limited.max_json_depth - 1)}]"
    assert json_depth(at_limit.encode()) == limited.max_json_depth

    at = await client.post("/transactions/batch", content=at_limit, headers=ACME)
    deep = await client.post("/transactions/batch", content=over, headers=ACME)

    assert at.status_code == 200
    assert [item["status"] for item in at.json()["results"]] == ["accepted", "error"]
    assert deep.status_code == 400
    assert await _entries(redis_client, limited) == 1


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ("{}", 1),
        ('[{"a": "[[[{{"}, [1]]', 2),
        ('{"a": "\\"]]", "b": [[2]]}', 3),
        ("[[[", 3),
    ],
)
def test_json_depth_ignores_brackets_in_strings(text: str, depth: int) -> None:
    """Depth counts structure only, never brackets inside (escaped) strings."""
    assert json_depth(text.encode()) == depth


def _get_with_header_bytes(
    base_url: str, path: str, total: int
) -> tuple[int, dict[str, str], bytes]:
    """GET ``path`` with request headers (names + values) of exactly ``total`` bytes."""
    netloc = urlsplit(base_url).netloc
    conn = http.client.HTTPConnection(netloc, timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", netloc)
        used = len("host") + len(netloc) + len("x-pad")
        conn.putheader("X-Pad", "p" * (total - used))
        conn.endheaders()
        response = conn.getresponse()
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("role", ["api", "notifier"])
def test_header_size_limit(
    start_role: Callable[..., RoleProcess], settings: Settings, role: str
) -> None:
    """Headers of exactly FINTRACK_MAX_HEADER_BYTES pass; one byte more is a 431 problem
    with the security headers, before routing or authentication."""
    limit = 4_096
    server = start_role(role, settings, FINTRACK_MAX_HEADER_BYTES=str(limit))

    at_limit, _, _ = _get_with_header_bytes(server.base_url, "/health", limit)
    over, headers, body = _get_with_header_bytes(server.base_url, "/health", limit + 1)

    assert at_limit == 200
    assert over == 431
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["status"] == 431
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
