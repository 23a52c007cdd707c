"""/admin/blocklist: admin-token only, changes the blocklist, audits every action."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from conftest import ADMIN_TOKEN, API_KEY
from fintrack.config import Settings
from fintrack.core.blocklist import current_version
from fintrack.ingest.app import create_app

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
Client = AsyncTestClient[Litestar]


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


async def _audit_rows(settings: Settings) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        cur = await conn.execute(
            "SELECT actor, action, target, remote, outcome FROM audit_log ORDER BY id"
        )
        return await cur.fetchall()


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": f"Bearer {API_KEY}"}, {"X-API-Key": API_KEY}, {"X-API-Key": "nope"}],
    ids=["none", "api-key-bearer", "api-key-header", "wrong"],
)
async def test_admin_endpoints_refuse_anything_but_an_admin_token(
    client: Client, settings: Settings, headers: dict[str, str]
) -> None:
    """No credential, a client API key or a wrong token → 401, audited, blocklist unchanged."""
    responses = [
        await client.get("/admin/blocklist", headers=headers),
        await client.post("/admin/blocklist", json={"network": "10.0.0.0/8"}, headers=headers),
        await client.delete("/admin/blocklist/10.0.0.0/8", headers=headers),
    ]

    assert [r.status_code for r in responses] == [401, 401, 401]
    assert all(r.headers["www-authenticate"].startswith("Bearer") for r in responses)
    rows = await _audit_rows(settings)
    assert [(r[0], r[1], r[4]) for r in rows] == [("unknown", "auth.admin", "denied")] * 3
    assert [r[2] for r in rows] == [
        "GET /admin/blocklist",
        "POST /admin/blocklist",
        "DELETE /admin/blocklist/10.0.0.0/8",
    ]
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM ip_blocklist")
        assert await cur.fetchone() == (0,)


async def test_admin_manages_the_blocklist_and_every_action_is_audited(
    client: Client, redis_client: Redis, settings: Settings
) -> None:
    """Add (201), list, update, remove (204), remove again (404), bad network (422): audited."""
    added = await client.post(
        "/admin/blocklist", json={"network": "203.0.113.7", "reason": "card testing"}, headers=ADMIN
    )
    assert (added.status_code, added.json()) == (
        201,
        {"network": "203.0.113.7/32", "reason": "card testing"},
    )
    v6 = await client.post("/admin/blocklist", json={"network": "2001:db8::/32"}, headers=ADMIN)
    assert v6.status_code == 201
    listed = await client.get("/admin/blocklist", headers=ADMIN)
    assert {(e["network"], e["added_by"]) for e in listed.json()} == {
        ("203.0.113.7/32", "alice"),
        ("2001:db8::/32", "alice"),
    }
    assert await current_version(redis_client, settings) == 2

    bad = await client.post("/admin/blocklist", json={"network": "10.0.0.1/8"}, headers=ADMIN)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "network"
    extra = await client.post(
        "/admin/blocklist", json={"network": "1.2.3.4", "x": 1}, headers=ADMIN
    )
    assert (extra.status_code, extra.json()["errors"][0]["field"]) == (422, "x")
    removed = await client.delete("/admin/blocklist/2001:db8::/32", headers=ADMIN)
    assert removed.status_code == 204
    again = await client.delete("/admin/blocklist/2001:db8::/32", headers=ADMIN)
    assert again.status_code == 404
    assert await current_version(redis_client, settings) == 3

    rows = await _audit_rows(settings)
    assert [(actor, action, target, outcome) for actor, action, target, _, outcome in rows] == [
        ("alice", "blocklist.add", "203.0.113.7/32", "ok"),
        ("alice", "blocklist.add", "2001:db8::/32", "ok"),
        ("alice", "blocklist.list", "", "ok"),
        ("alice", "blocklist.add", "10.0.0.1/8", "invalid"),
        ("alice", "blocklist.remove", "2001:db8::/32", "ok"),
        ("alice", "blocklist.remove", "2001:db8::/32", "not_found"),
    ]
    assert all(remote for *_, remote, _ in rows)


async def test_failed_client_authentication_is_audited_without_the_secret(
    client: Client, settings: Settings
) -> None:
    """A wrong API key → 401 and an audit row that never contains the presented secret."""
    secret = "definitely-not-a-key-" + "z" * 20
    response = await client.post(
        "/transactions",
        content=b'{"amount": 1, "source_ip": "1.2.3.4"}',
        headers={"X-API-Key": secret},
    )

    assert response.status_code == 401
    assert secret not in response.text
    rows = await _audit_rows(settings)
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("unknown", "auth.client", "POST /transactions", "denied")
    ]
    assert not any(secret in str(field) for row in rows for field in row)


async def test_open_mode_lets_anyone_administer_as_anonymous(settings: Settings) -> None:
    """With insecure_open (loopback demos) admin calls need no token; audit says anonymous."""
    async with AsyncTestClient(app=create_app(replace(settings, insecure_open=True))) as client:
        response = await client.post("/admin/blocklist", json={"network": "10.0.0.0/8"})

    assert response.status_code == 201
    assert (await _audit_rows(settings))[0][:2] == ("anonymous", "blocklist.add")
