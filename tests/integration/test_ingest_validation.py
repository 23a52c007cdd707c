"""Bad input gets a clear 4xx naming the field, and changes nothing in Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from conftest import API_KEY
from fintrack.config import Settings
from fintrack.ingest.app import create_app

ACME = {"Authorization": f"Bearer {API_KEY}"}
TXN_ID = "5f0c6a57-9d9e-4f55-a1b0-2f1c1c3f0a01"
Client = AsyncTestClient[Litestar]


def body(amount: str = "100", **fields: str) -> bytes:
    """A body with a raw amount literal and other fields given as raw JSON values."""
    parts = {"txn_id": f'"{TXN_ID}"', "amount": amount, "source_ip": '"1.2.3.4"'} | fields
    return ("{" + ",".join(f'"{k}":{v}' for k, v in parts.items() if v != "") + "}").encode()


# (case id, body, status, field named in `errors`)
BAD_INPUTS: list[tuple[str, bytes, int, str]] = [
    ("negative", body("-100"), 422, "amount"),
    ("zero", body("0"), 422, "amount"),
    ("negative-zero", body("-0.0"), 422, "amount"),
    ("nan", body("NaN"), 422, "amount"),
    ("infinity", body("Infinity"), 422, "amount"),
    ("minus-infinity", body("-Infinity"), 422, "amount"),
    ("1e309", body("1e309"), 422, "amount"),
    ("above-max", body("1000000000000.01"), 422, "amount"),
    ("inr-3-places", body("100.005", currency='"INR"'), 422, "amount"),
    ("jpy-1-place", body("100.5", currency='"JPY"'), 422, "amount"),
    ("tiny-fraction", body("1e-30"), 422, "amount"),
    ("amount-string", body('"150000"'), 422, "amount"),
    ("amount-nan-string", body('"NaN"'), 422, "amount"),
    ("amount-bool", body("true"), 422, "amount"),
    ("amount-null", body("null"), 422, "amount"),
    ("amount-array", body("[100]"), 422, "amount"),
    ("amount-object", body('{"value": 100}'), 422, "amount"),
    ("amount-too-long", body("1" + "0" * 60), 422, "amount"),
    ("amount-missing", body(""), 422, "amount"),
    ("currency-unknown", body(currency='"ABC"'), 422, "currency"),
    ("currency-lowercase", body(currency='"inr"'), 422, "currency"),
    ("currency-metal", body(currency='"XAU"'), 422, "currency"),
    ("currency-number", body(currency="356"), 422, "currency"),
    ("ipv4-out-of-range", body(source_ip='"256.1.1.1"'), 422, "source_ip"),
    ("ipv4-leading-zero", body(source_ip='"012.34.56.78"'), 422, "source_ip"),
    ("ipv4-short", body(source_ip='"1.2.3"'), 422, "source_ip"),
    ("ipv6-bad-hex", body(source_ip='"2001:db8::g"'), 422, "source_ip"),
    ("ipv6-too-many-groups", body(source_ip='"1:2:3:4:5:6:7:8:9"'), 422, "source_ip"),
    ("ipv6-zone-id", body(source_ip='"fe80::1%eth0"'), 422, "source_ip"),
    ("ip-hostname", body(source_ip='"example.com"'), 422, "source_ip"),
    ("ip-number", body(source_ip="16909060"), 422, "source_ip"),
    ("ip-missing", body(source_ip=""), 422, "source_ip"),
    ("ip-very-long", body(source_ip='"' + "1" * 5000 + '"'), 422, "source_ip"),
    ("status-approved", body(status='"APPROVED"'), 422, "status"),
    ("status-blocked", body(status='"BLOCKED"'), 422, "status"),
    ("status-lowercase", body(status='"pending"'), 422, "status"),
    ("status-null", body(status="null"), 422, "status"),
    ("extra-field", body(risk_score="0"), 422, "risk_score"),
    ("txn-id-not-uuid", body(txn_id='"txn-1"'), 422, "txn_id"),
    ("txn-id-number", body(txn_id="42"), 422, "txn_id"),
    ("user-id-number", body(user_id="123"), 422, "user_id"),
    ("user-id-empty", body(user_id='""'), 422, "user_id"),
    ("user-id-too-long", body(user_id='"' + "u" * 65 + '"'), 422, "user_id"),
    ("user-id-newline", body(user_id='"bob\\n"'), 422, "user_id"),
    ("user-id-very-long", body(user_id='"' + "u" * 100_000 + '"'), 422, "user_id"),
    ("merchant-space", body(merchant_type='"luxury goods"'), 422, "merchant_type"),
    ("merchant-object", body(merchant_type='{"a": 1}'), 422, "merchant_type"),
    ("empty-body", b"", 400, "$"),
    ("not-json", b"amount=200000&source_ip=12.34.56.78", 400, "$"),
    ("truncated-json", b'{"amount": 100, "source_ip": "1.2.3.4"', 400, "$"),
    ("invalid-utf8", b'{"amount": 100, "source_ip": "\xff\xfe"}', 400, "$"),
    ("array-body", b"[]", 422, "$"),
    ("string-body", b'"hello"', 422, "$"),
    ("deep-nesting", b'{"amount": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "$"),
]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


async def _keys(redis: Redis, settings: Settings) -> list[bytes]:
    return [key async for key in redis.scan_iter(match=f"{settings.key_prefix}:*")]


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
async def test_bad_input_is_refused_naming_the_field_and_changes_nothing(
    client: Client, redis_client: Redis, settings: Settings, raw: bytes, status: int, field: str
) -> None:
    """Each bad body → its 4xx problem+json naming the field; no stream entry, no idem key."""
    response = await client.post("/transactions", content=raw, headers=ACME)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert [e["field"] for e in problem["errors"]] == [field]
    assert problem["detail"]
    assert await _keys(redis_client, settings) == []


async def test_oversized_body_is_refused_before_parsing(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """A body over max_body_bytes → 413 problem (chunked bodies: see test_ingest_server)."""
    huge = body(user_id='"' + "u" * settings.max_body_bytes + '"')

    response = await client.post("/transactions", content=huge, headers=ACME)

    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    assert await _keys(redis_client, settings) == []


async def test_oversized_batch_is_refused_before_items_are_decoded(
    settings: Settings, redis_client: Redis
) -> None:
    """More than max_batch_items items → 413 for the whole batch; none is enqueued."""
    small = replace(settings, max_batch_items=5)
    good = b'{"amount": 1, "source_ip": "1.2.3.4"}'
    async with AsyncTestClient(app=create_app(small)) as client:
        too_many = await client.post(
            "/transactions/batch", content=b"[" + b",".join([good] * 6) + b"]", headers=ACME
        )
        just_right = await client.post(
            "/transactions/batch", content=b"[" + b",".join([good] * 5) + b"]", headers=ACME
        )

    assert too_many.status_code == 413
    assert "at most 5" in too_many.json()["detail"]
    assert just_right.status_code == 200
    assert await redis_client.xlen(settings.txn_stream) == 5


@pytest.mark.parametrize(
    ("raw", "status"),
    [(b'{"amount": 1}', 422), (b"[{", 400), (b"[" * 5000 + b"]" * 5000, 400)],
    ids=["object", "broken", "deep"],
)
async def test_batch_that_is_not_an_array_is_refused(
    client: Client, redis_client: Redis, settings: Settings, raw: bytes, status: int
) -> None:
    """A batch body that is not a JSON array of objects → one 4xx for the whole request."""
    response = await client.post("/transactions/batch", content=raw, headers=ACME)

    assert response.status_code == status
    assert response.json()["errors"][0]["field"] == "$"
    assert await _keys(redis_client, settings) == []
