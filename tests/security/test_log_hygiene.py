"""Log hygiene: no secret in any log line, and client input can't forge log lines.

The full-run test plants secrets everywhere a careless log line could pick one up (API
keys and admin tokens, right and wrong, in both headers; an issued key; the session
cookie and the session secret; passwords in the Redis and PostgreSQL URLs), drives the api,
a worker and the notifier through normal work, refusals and a Redis outage, then searches
every line they logged.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import psycopg
import pytest
import redis

from conftest import ADMIN_TOKEN, API_KEY, RoleProcess, free_port, wait_until
from fintrack.config import Settings, hash_secret
from fintrack.core.embedded import EmbeddedValkey

StartRole = Callable[..., RoleProcess]
WRONG_KEY = "wrong-key-" + secrets.token_hex(16)
WRONG_ADMIN = "wrong-admin-" + secrets.token_hex(16)
REDIS_PASSWORD = "redis-pw-" + secrets.token_hex(12)
PG_PASSWORD = "pg-pw-" + secrets.token_hex(12)  # PostgreSQL trusts loopback: never checked
SESSION_SECRET = "session-secret-" + secrets.token_hex(16)
GRANIAN_LINE = re.compile(r"\[(INFO|WARNING|ERROR)\] ")  # how Granian starts its own lines


@pytest.fixture
def valkey() -> Iterator[EmbeddedValkey]:
    """A private Valkey that asks for a password (restartable without touching the shared
    Redis)."""
    data = Path(tempfile.mkdtemp(prefix="fintrack-valkey-"))
    server = EmbeddedValkey(data)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def _require_password(server: EmbeddedValkey) -> None:
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        client.config_set("requirepass", REDIS_PASSWORD)
    finally:
        client.close()


def _leaks(text: str, planted: list[str]) -> list[str]:
    return [secret for secret in planted if secret in text]


def test_no_secret_reaches_any_log_of_a_full_run(
    start_role: StartRole, settings: Settings, valkey: EmbeddedValkey
) -> None:
    """api, worker and notifier logs hold none of the planted secrets; every line is one
    JSON object, so no client input started a line of its own."""
    _require_password(valkey)
    port = valkey.port
    assert port is not None
    planted_settings = replace(
        settings,
        redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0",
        database_url=psycopg.conninfo.make_conninfo(settings.database_url, password=PG_PASSWORD),
        key_refresh_s=0.2,
        session_secret=SESSION_SECRET,  # every role gets it here, to catch any that logs it
    )
    api = start_role("api", planted_settings)
    worker = start_role("worker", planted_settings)
    notifier = start_role("notifier", planted_settings, FINTRACK_SSE_LIFETIME_S="0.3")
    planted = [API_KEY, ADMIN_TOKEN, WRONG_KEY, WRONG_ADMIN, REDIS_PASSWORD, PG_PASSWORD]
    planted.append(SESSION_SECRET)

    with httpx.Client(timeout=10) as http:
        bearer = {"Authorization": f"Bearer {API_KEY}"}
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        body = b'{"amount": 10, "source_ip": "1.2.3.4", "user_id": "u1"}'
        issued = http.post(f"{api.base_url}/admin/keys", json={"name": "acme"}, headers=admin)
        planted.append(issued.json()["secret"])
        accepted = [
            http.post(f"{api.base_url}/transactions", content=body, headers=bearer),
            http.post(
                f"{api.base_url}/transactions",
                content=body,
                headers={"X-API-Key": issued.json()["secret"], "X-Request-ID": "ok-1"},
            ),
        ]
        assert [r.status_code for r in accepted] == [202, 202]
        refused = [
            http.post(
                f"{api.base_url}/transactions", content=body, headers={"X-API-Key": WRONG_KEY}
            ),
            http.get(
                f"{api.base_url}/admin/keys", headers={"Authorization": f"Bearer {WRONG_ADMIN}"}
            ),
            http.get(f"{api.base_url}/admin/keys", headers=bearer),
            http.post(
                f"{api.base_url}/transactions",
                content=b'{"amount": 10, "source_ip": "1.2.3.4", "user_id": "u\\nforged"}',
                headers=bearer,
            ),
            http.get(f'{api.base_url}/nope%0A{{"event":"forged"}}', headers=bearer),
            http.get(
                f"{notifier.base_url}/events", headers={"Authorization": f"Bearer {WRONG_ADMIN}"}
            ),
        ]
        assert [r.status_code for r in refused] == [401, 401, 401, 422, 404, 401]
        assert http.get(f"{notifier.base_url}/events", headers=admin).status_code == 200
        bad_login = http.post(f"{notifier.base_url}/login", data={"token": WRONG_ADMIN})
        assert bad_login.headers["location"] == "/login?error=1"
        login = http.post(f"{notifier.base_url}/login", data={"token": ADMIN_TOKEN})
        session = login.cookies["fintrack_session"]
        planted.append(session)
        # The client keeps the cookie: it goes to the notifier and, same host, to the api.
        assert http.get(f"{notifier.base_url}/").status_code == 200

        for response in accepted:
            location = f"{api.base_url}{response.headers['location']}"
            wait_until(
                lambda url=location: (
                    http.get(url, headers=bearer).status_code == 200
                    and http.get(url, headers=bearer).json()["status"] != "PENDING"
                ),
                30,
                "a decision",
            )
        # A Redis outage: every role logs its connection errors.
        valkey.stop()
        assert (
            http.post(f"{api.base_url}/transactions", content=body, headers=bearer).status_code
            == 503
        )
        wait_until(lambda: "dependency unavailable" in worker.log(), 15, "the worker to notice")
        valkey.requested_port = port
        valkey.start()
        _require_password(valkey)
        wait_until(
            lambda: (
                http.post(f"{api.base_url}/transactions", content=body, headers=bearer).status_code
                == 202
            ),
            30,
            "the api to recover",
        )

    for role in (api, worker, notifier):
        assert role.stop() == 0
        log = role.log()
        assert log.strip()
        assert not _leaks(log, planted), f"{role.proc.args}: {_leaks(log, planted)}"
        for line in log.splitlines():
            # Granian's own lines ("[INFO] Started worker-1"; under load, at shutdown, also
            # "[WARNING] Killing worker-1 after it refused to gracefully stop" for a worker
            # that is already exiting: Granian gives it 1 ms to be reaped) carry no input.
            if not GRANIAN_LINE.match(line):
                assert isinstance(json.loads(line), dict), line
    api_lines = [json.loads(line) for line in api.log().splitlines() if line.startswith("{")]
    assert any("\n" in str(line.get("path", "")) for line in api_lines)  # logged, escaped


def test_console_log_escapes_line_breaks(start_role: StartRole, settings: Settings) -> None:
    """On a console, a path with line breaks or escape codes stays on its request's line."""
    api = start_role("api", settings, FINTRACK_LOG_FORMAT="console")
    response = httpx.get(f"{api.base_url}/x%0D%0Aforged-line%1B[31m%E2%80%A8also-forged")
    assert response.status_code == 404
    assert api.stop() == 0

    lines = api.log().splitlines()
    request = [line for line in lines if "forged-line" in line]
    assert len(request) == 1
    assert "\\r\\nforged-line\\x1b[31m\\u2028also-forged" in request[0]
    assert not any(line.lstrip().startswith(("forged", "also-forged")) for line in lines)


@pytest.mark.slow
def test_run_all_output_holds_no_secret(tmp_path: Path) -> None:
    """`fintrack run all` (embedded servers, every role) prints no planted key, even after
    serving requests with it and refusing a wrong one."""
    data = Path(tempfile.mkdtemp(prefix="fintrack-logs-"))
    data.chmod(0o755)  # the embedded PostgreSQL runs as another user: it must get in
    api_port, notifier_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FINTRACK_")},
        "FINTRACK_DATA_DIR": str(data),
        "FINTRACK_API_PORT": str(api_port),
        "FINTRACK_NOTIFIER_PORT": str(notifier_port),
        "FINTRACK_API_KEYS": f"acme={hash_secret(API_KEY)}",
        "FINTRACK_ADMIN_TOKENS": f"alice={hash_secret(ADMIN_TOKEN)}",
    }
    log_path = tmp_path / "run-all.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fintrack", "run", "all", "--workers", "1"],
            env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{api_port}"

        def healthy() -> bool:
            assert proc.poll() is None, log_path.read_text(errors="replace")
            try:
                return httpx.get(f"{api}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 90, "run all to start")
        with httpx.Client(base_url=api, timeout=10) as http:
            body = b'{"amount": 10, "source_ip": "1.2.3.4"}'
            ok = http.post("/transactions", content=body, headers={"X-API-Key": API_KEY})
            assert ok.status_code == 202
            assert (
                http.post(
                    "/transactions", content=body, headers={"X-API-Key": WRONG_KEY}
                ).status_code
                == 401
            )
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            assert http.get("/admin/blocklist", headers=admin).status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        shutil.rmtree(data, ignore_errors=True)
    output = log_path.read_text(errors="replace")
    assert "request" in output
    assert not _leaks(output, [API_KEY, ADMIN_TOKEN, WRONG_KEY])
