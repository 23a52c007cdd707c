"""Shared fixtures: real Redis and PostgreSQL, isolated per test.

Where the services come from, in order: ``FINTRACK_TEST_REDIS_URL`` /
``FINTRACK_TEST_DATABASE_URL`` if set; else the machine's own servers on 127.0.0.1:6379 and
:5432 if they answer; else embedded Valkey and PostgreSQL started for this test session.
``FINTRACK_TEST_SERVICES=embedded`` skips the probe: the suite then runs exactly as on a
machine with neither server installed.
Each test that asks for ``settings`` gets its own Redis key prefix and its own database
(copied from a migrated template), both removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from psycopg import sql
from redis.asyncio import Redis

from fintrack.config import Settings, hash_secret
from fintrack.core.db import migrate

API_KEY = "test-api-key-" + secrets.token_hex(16)
OTHER_API_KEY = "other-api-key-" + secrets.token_hex(16)
ADMIN_TOKEN = "test-admin-token-" + secrets.token_hex(16)
TEMPLATE_DB = f"fintrack_tmpl_{os.getpid()}"


@dataclass(frozen=True)
class Services:
    redis_url: str
    admin_database_url: str  # a database we may CREATE DATABASE from

    def database_url(self, name: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_database_url, dbname=name)


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Real servers for the whole session (the machine's, or embedded ones)."""
    redis_url = os.environ.get("FINTRACK_TEST_REDIS_URL", "")
    database_url = os.environ.get("FINTRACK_TEST_DATABASE_URL", "")
    probe = os.environ.get("FINTRACK_TEST_SERVICES", "") != "embedded"
    with ExitStack() as stack:
        if not redis_url:
            if probe and _answers("127.0.0.1", 6379):
                redis_url = "redis://127.0.0.1:6379/0"
            else:
                from fintrack.core.embedded import EmbeddedValkey

                valkey = stack.enter_context(EmbeddedValkey(tmp_path_factory.mktemp("valkey")))
                redis_url = valkey.url
        if not database_url:
            if probe and _answers("127.0.0.1", 5432):
                database_url = "postgresql://postgres@127.0.0.1:5432/postgres"
            else:
                from fintrack.core.embedded import EmbeddedPostgres

                # Outside pytest's tmp tree: a new pytest session anywhere on the machine
                # resets that tree to 0700, locking out the server's unprivileged user.
                pg_dir = Path(tempfile.mkdtemp(prefix="fintrack-test-pg-"))
                stack.callback(shutil.rmtree, pg_dir, ignore_errors=True)
                pg = stack.enter_context(EmbeddedPostgres(pg_dir / "data"))
                database_url = pg.url
        found = Services(redis_url, database_url)
        _create_template(found)
        try:
            yield found
        finally:
            _drop_database(found, TEMPLATE_DB)


def _create_template(found: Services) -> None:
    _drop_database(found, TEMPLATE_DB)
    with psycopg.connect(found.admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    migrate(found.database_url(TEMPLATE_DB))


def _drop_database(found: Services, name: str) -> None:
    with psycopg.connect(found.admin_database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def database_url(services: Services) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"fintrack_t_{secrets.token_hex(6)}"
    with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE_DB)
            )
        )
    try:
        yield services.database_url(name)
    finally:
        _drop_database(services, name)


@pytest.fixture
def key_prefix(services: Services) -> Iterator[str]:
    """A Redis key prefix for this test only; every key under it is deleted afterwards."""
    import redis

    prefix = f"fttest:{secrets.token_hex(6)}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(services.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()


@pytest.fixture
def settings(services: Services, database_url: str, key_prefix: str) -> Settings:
    """Settings wired to this test's database and key prefix, with one API key and one
    admin token configured (``API_KEY``/``OTHER_API_KEY``, ``ADMIN_TOKEN``)."""
    return Settings(
        redis_url=services.redis_url,
        database_url=database_url,
        key_prefix=key_prefix,
        api_keys=f"acme={hash_secret(API_KEY)},globex={hash_secret(OTHER_API_KEY)}",
        admin_tokens=f"alice={hash_secret(ADMIN_TOKEN)}",
        worker_block_ms=200,
        worker_claim_idle_ms=2_000,
        log_format="json",
    )


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def redis_sync(settings: Settings) -> Iterator[redis.Redis]:
    """A synchronous client on this test's Redis, for setting up and inspecting state."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until it is true, or fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class RoleProcess:
    """A ``fintrack run ROLE`` child process and where it listens (if it does)."""

    proc: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = 15, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"role did not stop in {timeout} s:\n{self.log()}") from None
        return self.proc.returncode


@pytest.fixture
def start_role(
    tmp_path: Path, key_prefix: str, database_url: str
) -> Iterator[Callable[..., RoleProcess]]:
    """Start ``fintrack run ROLE`` as a real process with the given settings.

    HTTP roles get a free port (or ``port=``) and are waited for until ``/health`` answers.
    Everything started is stopped (SIGTERM, then SIGKILL) at the end of the test — before
    the test's keys and database are removed (hence the two fixtures it asks for: torn
    down after it), so that no process still running can write keys after the clean-up.
    """
    started: list[RoleProcess] = []

    def start(
        role: str, settings: Settings, *args: str, port: int | None = None, **env: str
    ) -> RoleProcess:
        # `port`: listen there instead of a free one (e.g. restart a role where it was).
        port = free_port() if port is None else port
        child_env = {**os.environ, **settings.to_env(), **env}
        child_env[f"FINTRACK_{'NOTIFIER' if role == 'notifier' else 'API'}_PORT"] = str(port)
        log_path = tmp_path / f"{role}-{len(started)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fintrack", "run", role, *args],
                env=child_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                # Its own process group, so Granian's worker processes can be reaped too.
                start_new_session=True,
            )
        role_proc = RoleProcess(proc, f"http://127.0.0.1:{port}", log_path)
        started.append(role_proc)
        if role in ("api", "notifier"):

            def healthy() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"{role} exited early:\n{role_proc.log()}")
                try:
                    return httpx.get(f"{role_proc.base_url}/health", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(healthy, 30, f"{role} /health")
        return role_proc

    yield start
    for role_proc in started:
        if role_proc.proc.poll() is None:
            role_proc.proc.terminate()
    deadline = time.monotonic() + 10
    for role_proc in started:
        with contextlib.suppress(subprocess.TimeoutExpired):
            role_proc.proc.wait(max(0.1, deadline - time.monotonic()))
        # SIGKILL on the main process alone would orphan Granian's workers: kill the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(role_proc.proc.pid, signal.SIGKILL)
        role_proc.proc.wait(10)
