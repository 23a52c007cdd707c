"""The fast path for ``POST /transactions`` (``ingest.fastpath``) against a real server:
its answers equal the Litestar handler's, and what it passes on reaches the handler whole.

``Prefer: wait=0`` asks for no waiting, so it gets the handler's plain 202: the same
request through both paths."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import redis

from conftest import API_KEY, RoleProcess, wait_until
from fintrack.config import Settings
from fintrack.core.models import transaction_decoder

ACME = {"Authorization": f"Bearer {API_KEY}"}
VIA_LITESTAR = {"Prefer": "wait=0"}
StartRole = Callable[..., RoleProcess]
# Headers whose values differ between any two answers.
_PER_RESPONSE = {"date", "x-request-id", "location", "content-length"}


def _body(txn_id: str, **fields: object) -> dict[str, object]:
    return {"txn_id": txn_id, "amount": 12.5, "source_ip": "10.1.2.3", **fields}


@pytest.fixture
def api(start_role: StartRole, settings: Settings) -> RoleProcess:
    return start_role("api", replace(settings, max_body_bytes=64 * 1024))


@pytest.fixture
def http(api: RoleProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, headers=ACME, timeout=10) as client:
        yield client


def _shape(response: httpx.Response) -> tuple[int, dict[str, str], object]:
    """Status, headers but those unique to one answer, and the body with ids blanked."""
    headers = {k: v for k, v in response.headers.items() if k not in _PER_RESPONSE}
    body = response.json()
    if isinstance(body, dict) and "txn_id" in body:
        body["txn_id"] = "…"
    return response.status_code, headers, body


def test_accepted_answer_equals_the_handlers(http: httpx.Client) -> None:
    """202: same status, headers (security headers too) and body shape on both paths."""
    fast = http.post("/transactions", json=_body(str(uuid.uuid4())))
    slow = http.post("/transactions", json=_body(str(uuid.uuid4())), headers=VIA_LITESTAR)

    assert fast.status_code == 202
    assert _shape(fast) == _shape(slow)
    for response in (fast, slow):
        assert response.headers["location"] == f"/transactions/{response.json()['txn_id']}"
        assert response.headers["x-request-id"]


def test_conflict_answer_equals_the_handlers(http: httpx.Client) -> None:
    """409 (a refusal of the hand-off itself, answered by the fast path) matches too."""
    txn_id = str(uuid.uuid4())
    assert http.post("/transactions", json=_body(txn_id)).status_code == 202

    fast = http.post("/transactions", json=_body(txn_id, amount=13))
    slow = http.post("/transactions", json=_body(txn_id, amount=13), headers=VIA_LITESTAR)

    assert fast.status_code == 409
    assert fast.headers["content-type"] == "application/problem+json"
    assert _shape(fast) == _shape(slow)
    assert fast.json()["errors"] == [{"field": "txn_id", "message": "already used"}]


def test_invalid_body_sent_in_chunks_reaches_the_handler_whole(
    http: httpx.Client, settings: Settings
) -> None:
    """A chunked body the fast path refuses is replayed to the handler: 422 naming the
    field, as for the same body sent at once, and nothing is enqueued."""
    raw = json.dumps(_body(str(uuid.uuid4()), currency="XXXX")).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(raw), 7):
            yield raw[start : start + 7]

    chunked = http.post("/transactions", content=chunks())
    at_once = http.post("/transactions", content=raw)

    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert chunked.status_code == 422
    assert chunked.json()["errors"][0]["field"] == "currency"
    assert _shape(chunked) == _shape(at_once)
    with redis.Redis.from_url(settings.redis_url) as client:
        assert client.exists(settings.txn_stream) == 0


def test_valid_body_sent_in_chunks_is_accepted_once(http: httpx.Client, settings: Settings) -> None:
    txn_id = str(uuid.uuid4())
    raw = json.dumps(_body(txn_id, user_id="chunky")).encode()

    response = http.post("/transactions", content=iter([raw[:10], raw[10:30], raw[30:]]))

    assert response.status_code == 202
    with redis.Redis.from_url(settings.redis_url) as client:
        entries = client.xrange(settings.txn_stream)
    assert len(entries) == 1
    txn = transaction_decoder.decode(entries[0][1][b"txn"])
    assert (str(txn.txn_id), txn.user_id, txn.client_id) == (txn_id, "chunky", "acme")


def test_refused_key_is_answered_and_audited_by_the_handler(
    http: httpx.Client, settings: Settings
) -> None:
    """An unknown key on the hottest route: the handler's 401 with its challenge."""
    response = http.post(
        "/transactions", json=_body(str(uuid.uuid4())), headers={"Authorization": "Bearer nope"}
    )

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    with redis.Redis.from_url(settings.redis_url) as client:
        assert client.exists(settings.txn_stream) == 0


def test_requests_on_both_paths_are_logged_and_counted_alike(
    api: RoleProcess, http: httpx.Client
) -> None:
    """One access-log line each (with the txn_id bound and the path as sent), and the
    route's request counter (by its template)."""
    ids = [str(uuid.uuid4()) for _ in range(2)]
    assert http.post("/transactions/", json=_body(ids[0])).status_code == 202
    http.post("/transactions", json=_body(ids[1]), headers=VIA_LITESTAR)

    metrics = http.get("/metrics").text

    def posts_logged() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in api.log().splitlines() if line.startswith("{")]
        return [
            line for line in lines if line.get("event") == "request" and line["method"] == "POST"
        ]

    # Request lines are flushed within JsonLines.FLUSH_S.
    wait_until(lambda: len(posts_logged()) == 2, 5, "both request lines")
    posts = posts_logged()

    assert sorted(line["txn_id"] for line in posts) == sorted(ids)
    assert {line["status"] for line in posts} == {202}
    assert sorted(line["path"] for line in posts) == ["/transactions", "/transactions/"]
    counted = [
        line
        for line in metrics.splitlines()
        if line.startswith("fintrack_api_requests_total")
        and 'path="/transactions"' in line
        and 'method="POST"' in line
    ]
    assert len(counted) == 1
    assert float(counted[0].rsplit(" ", 1)[1]) == 2


def test_request_ids_are_echoed_alike_on_both_paths(http: httpx.Client) -> None:
    """A valid X-Request-ID comes back as sent; an invalid one is replaced by a new id."""
    for extra in ({}, VIA_LITESTAR):
        sent = http.post(
            "/transactions",
            json=_body(str(uuid.uuid4())),
            headers={**extra, "X-Request-ID": "client-7.a"},
        )
        refused = http.post(
            "/transactions",
            json=_body(str(uuid.uuid4())),
            headers={**extra, "X-Request-ID": "not valid!"},
        )
        assert (sent.status_code, refused.status_code) == (202, 202)
        assert sent.headers["x-request-id"] == "client-7.a"
        assert refused.headers["x-request-id"] not in ("", "not valid!")


def test_headers_over_the_limit_are_refused_before_the_hand_off(
    http: httpx.Client, settings: Settings
) -> None:
    """The shortcut leaves them to the api's edge: 431, and nothing is enqueued."""
    response = http.post(
        "/transactions",
        json=_body(str(uuid.uuid4())),
        headers={"X-Pad": "p" * settings.max_header_bytes},
    )

    assert response.status_code == 431
    assert response.headers["x-content-type-options"] == "nosniff"
    with redis.Redis.from_url(settings.redis_url) as client:
        assert client.exists(settings.txn_stream) == 0
