"""Access control: what each credential reaches, key rotation without a restart, audit.

Reading another client's transaction (404, never 403) is also covered where the reads
live: ``test_ingest_submit.py::test_get_while_pending_then_404_for_unknown_and_other_clients``,
``test_ingest_decisions.py`` (decided rows and exports).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import psycopg
import pytest
from litestar.testing import AsyncTestClient

from conftest import ADMIN_TOKEN, API_KEY, OTHER_API_KEY, RoleProcess, wait_until
from fintrack.config import Settings, hash_secret
from fintrack.ingest.app import create_app

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BODY = b'{"amount": 10, "source_ip": "1.2.3.4", "user_id": "u1"}'
StartRole = Callable[..., RoleProcess]


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _audit(settings: Settings, action_prefix: str = "") -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT actor, action, target, remote, outcome FROM audit_log"
            " WHERE action LIKE %s ORDER BY id",
            (action_prefix + "%",),
        ).fetchall()


@pytest.fixture
def fast_keys(settings: Settings) -> Settings:
    return replace(settings, key_refresh_s=0.2)


def test_each_credential_reaches_only_its_own_endpoints(
    start_role: StartRole, settings: Settings
) -> None:
    """An API key can't administer, watch the feed or open the dashboard; the admin token
    can; another client's transaction is a 404 for it; wrong tokens are audited."""
    api = start_role("api", settings)
    notifier = start_role("notifier", settings, FINTRACK_SSE_LIFETIME_S="0.2")
    with httpx.Client(timeout=10) as http:
        mine = http.post(f"{api.base_url}/transactions", content=BODY, headers=_bearer(API_KEY))
        assert mine.status_code == 202
        location = f"{api.base_url}{mine.headers['location']}"
        assert http.get(location, headers=_bearer(API_KEY)).status_code == 200
        assert http.get(location, headers=_bearer(OTHER_API_KEY)).status_code == 404

        for path in ("/admin/blocklist", "/admin/keys"):
            assert http.get(f"{api.base_url}{path}", headers=_bearer(API_KEY)).status_code == 401
            assert http.get(f"{api.base_url}{path}", headers=ADMIN).status_code == 200
        # An admin token is not an API key either.
        assert (
            http.post(f"{api.base_url}/transactions", content=BODY, headers=ADMIN).status_code
            == 401
        )

        events = f"{notifier.base_url}/events"
        assert http.get(events, headers=_bearer(API_KEY)).status_code == 401
        assert http.get(events, headers=ADMIN).status_code == 200
        page = http.get(f"{notifier.base_url}/", headers=_bearer(API_KEY))
        assert (page.status_code, page.headers["location"]) == (303, "/login")
        assert http.get(f"{notifier.base_url}/", headers=ADMIN).status_code == 200
        login = http.post(f"{notifier.base_url}/login", data={"token": API_KEY})
        assert login.headers["location"] == "/login?error=1"
        assert "set-cookie" not in login.headers

    refused = [row for row in _audit(settings) if row[4] != "ok"]
    actions = [(actor, action) for actor, action, *_ in refused]
    assert actions.count(("unknown", "auth.admin")) == 2
    assert ("unknown", "auth.client") in actions
    assert ("unknown", "auth /events") in actions
    assert ("unknown", "login") in actions
    assert all(remote == "127.0.0.1" for *_, remote, _ in refused)
    assert not any(API_KEY in str(value) for row in refused for value in row)


def test_key_rotation_without_restart_across_replicas(
    start_role: StartRole, fast_keys: Settings
) -> None:
    """Issue a key on one replica: it works on both at once. Issue a second for the same
    client: both work, both see the client's transactions. Revoke the first: refused at once
    where revoked, within FINTRACK_KEY_REFRESH_S on the other. All audited."""
    a, b = start_role("api", fast_keys), start_role("api", fast_keys)
    with httpx.Client(timeout=10) as http:

        def issue() -> dict[str, Any]:
            response = http.post(
                f"{a.base_url}/admin/keys", json={"name": "initech"}, headers=ADMIN
            )
            assert response.status_code == 201
            assert response.headers["cache-control"] == "no-store"
            issued: dict[str, Any] = response.json()
            return issued

        def submit(base_url: str, secret: str) -> int:
            return http.post(
                f"{base_url}/transactions", content=BODY, headers=_bearer(secret)
            ).status_code

        old = issue()
        assert old["secret"].startswith("ftk_")
        assert [submit(a.base_url, old["secret"]), submit(b.base_url, old["secret"])] == [202] * 2
        new = issue()
        first = http.post(
            f"{b.base_url}/transactions", content=BODY, headers=_bearer(old["secret"])
        )
        assert submit(b.base_url, new["secret"]) == 202
        # Same client: the new key reads what the old one sent.
        read = http.get(f"{a.base_url}{first.headers['location']}", headers=_bearer(new["secret"]))
        assert read.status_code == 200

        revoked = http.delete(f"{a.base_url}/admin/keys/{old['id']}", headers=ADMIN)
        assert revoked.status_code == 204
        assert submit(a.base_url, old["secret"]) == 401
        wait_until(lambda: submit(b.base_url, old["secret"]) == 401, 5, "revocation on replica b")
        assert [submit(a.base_url, new["secret"]), submit(b.base_url, new["secret"])] == [202] * 2
        assert http.delete(f"{a.base_url}/admin/keys/{old['id']}", headers=ADMIN).status_code == 404
        listed = http.get(f"{b.base_url}/admin/keys", headers=ADMIN).json()

    assert listed["configured"] == ["acme", "globex"]
    states = {key["id"]: key["revoked_at"] is not None for key in listed["issued"]}
    assert states == {old["id"]: True, new["id"]: False}
    assert all("secret" not in key for key in listed["issued"])
    with psycopg.connect(fast_keys.database_url) as conn:
        rows = conn.execute("SELECT * FROM api_keys ORDER BY created_at").fetchall()
    assert [row[2] for row in rows] == [hash_secret(old["secret"]), hash_secret(new["secret"])]
    assert not any(key["secret"] in str(v) for key in (old, new) for row in rows for v in row)
    audit = [
        (actor, action, outcome) for actor, action, _, _, outcome in _audit(fast_keys, "keys.")
    ]
    assert audit == [
        ("alice", "keys.create", "ok"),
        ("alice", "keys.create", "ok"),
        ("alice", "keys.revoke", "ok"),
        ("alice", "keys.revoke", "not_found"),
        ("alice", "keys.list", "ok"),
    ]


def test_cli_issues_lists_and_revokes_keys(start_role: StartRole, fast_keys: Settings) -> None:
    """`fintrack keys add|list|revoke` against a running api: the printed secret works at
    once, the revoked key stops working without a restart; the CLI's actions are audited."""
    api = start_role("api", fast_keys)
    env = {**os.environ, **fast_keys.to_env()}

    def fintrack(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fintrack", "keys", *args],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    added = fintrack("add", "hooli")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    assert secret.startswith("ftk_")
    assert secret not in added.stderr
    key_id = added.stderr.split()[2]
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        assert http.post("/transactions", content=BODY, headers=_bearer(secret)).status_code == 202
        listing = fintrack("list")
        assert f"{key_id}\thooli\t" in listing.stdout
        assert listing.stdout.rstrip().endswith("active")
        assert fintrack("revoke", key_id).returncode == 0
        assert fintrack("revoke", key_id).returncode == 1
        wait_until(
            lambda: (
                http.post("/transactions", content=BODY, headers=_bearer(secret)).status_code == 401
            ),
            5,
            "revoked CLI key refused",
        )
    rows = [
        (actor, action, remote, outcome)
        for actor, action, _, remote, outcome in _audit(fast_keys, "keys.")
    ]
    assert rows == [
        ("cli", "keys.create", "local", "ok"),
        ("cli", "keys.list", "local", "ok"),
        ("cli", "keys.revoke", "local", "ok"),
        ("cli", "keys.revoke", "local", "not_found"),
    ]


async def test_failed_authentication_is_audited_whatever_the_path(settings: Settings) -> None:
    """A refused request whose path holds control characters (or undecodable bytes) still
    leaves an audit row, with those characters escaped."""
    async with AsyncTestClient(app=create_app(settings)) as client:
        for path in ("/admin/blocklist/%00%0Aforged", "/admin/blocklist/%ff"):
            response = await client.delete(path, headers={"X-API-Key": "wrong"})
            assert response.status_code == 401

    targets = [target for _, _, target, _, _ in _audit(settings, "auth.")]
    assert len(targets) == 2
    assert targets[0] == "DELETE /admin/blocklist/\\x00\\x0aforged"
    assert all("\n" not in target and "\x00" not in target for target in targets)


async def test_admin_key_endpoint_validates_names(settings: Settings) -> None:
    """A client name must be 1-64 safe characters; unknown fields are refused."""
    async with AsyncTestClient(app=create_app(settings)) as client:
        bad = [
            await client.post("/admin/keys", json={"name": name}, headers=ADMIN)
            for name in ("", "a" * 65, "two words", "new\nline")
        ]
        extra = await client.post("/admin/keys", json={"name": "ok", "x": 1}, headers=ADMIN)

    assert {r.status_code for r in bad} == {422}
    assert (extra.status_code, extra.json()["errors"][0]["field"]) == (422, "x")
