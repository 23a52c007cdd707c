"""What every scenario shares: the servers to use, per-run isolation, and role launchers.

Redis and PostgreSQL are the machine's own when they answer on 127.0.0.1:6379 / :5432,
else embedded ones (``fintrack.core.embedded``) started for this run. Each run creates a
migrated template database and gives every scenario variant a fresh copy of it and its own
Redis key prefix; all of them are dropped/deleted when the run ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from psycopg import sql

from benchmarks._procs import BenchError, Server, spawn, wait_healthy
from fintrack.config import Settings
from fintrack.core.db import migrate
from fintrack.core.embedded import free_port

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
REPO_ROOT = Path(__file__).resolve().parent.parent


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def require_loopback(url: str) -> None:
    """Refuse to load anything but this machine."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise BenchError(f"refusing a non-loopback server: {host}")


@dataclass(frozen=True)
class Options:
    """Knobs of one invocation (see ``python -m benchmarks --help``)."""

    duration_s: float = 10.0
    quick: bool = False
    log_level: str = "warning"
    http_workers: int = 2
    connections: int = 64
    batch_items: int = 1_000
    batch_connections: int = 8
    # Batch runs the api as deployed by default (one process): Redis, single-threaded, is
    # what bounds it, and a second api process only takes CPU from it (measured in
    # docs/performance.md: 59.8k and 51.7k txn/s with one, 45.9k and 47.8k with two).
    batch_api_workers: int = 1
    e2e_rates: tuple[int, ...] = (500, 1_000, 3_000)
    # e2e runs the api as deployed by default (FINTRACK_HTTP_WORKERS=1): on two cores that
    # also carry the worker, the notifier, Redis, PostgreSQL and the load, a second api
    # process costs more CPU than it adds (measured in docs/performance.md).
    e2e_api_workers: int = 1
    # The stretch target is for a *sustained* rate: a run long enough for the tables, the
    # ledgers and the worker's caches to grow (0 skips it), with realistic traffic.
    sustained_s: float = 60.0
    sustained_rate: int = 3_000
    sustained_users: int = 100_000
    fanout_clients: int = 500
    fanout_rate: int = 200
    idle_connections: int = 5_000
    sse_clients: int = 2_000
    worker_count: int = 0  # transactions per worker variant; 0: from the duration
    worker_users: int = 1_000  # distinct users in the worker's traffic (history per user)


@dataclass
class Context:
    """One benchmark invocation: servers, options, isolation, and what to clean up."""

    options: Options
    redis_url: str
    admin_database_url: str
    log_dir: Path
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    shared: dict[str, Any] = field(default_factory=dict)  # results reused across scenarios
    servers_used: str = ""
    _databases: list[str] = field(default_factory=list)
    _template: str = ""
    _stack: ExitStack = field(default_factory=ExitStack)
    _scope: ExitStack | None = None  # the running scenario's processes, see ``scope``

    @property
    def key_root(self) -> str:
        return f"fintrack-bench:{self.run_id}"

    # ---- isolation -----------------------------------------------------------------

    def database_url(self, name: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_database_url, dbname=name)

    def new_database(self) -> str:
        """A fresh migrated database (a copy of this run's template); dropped at the end."""
        if not self._template:
            self._template = f"fintrack_bench_{self.run_id}_tmpl"
            self._create(self._template, template=None)
            migrate(self.database_url(self._template))
        name = f"fintrack_bench_{self.run_id}_{len(self._databases)}"
        self._create(name, template=self._template)
        return self.database_url(name)

    def _create(self, name: str, template: str | None) -> None:
        with psycopg.connect(self.admin_database_url, autocommit=True) as conn:
            query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
            if template is not None:
                query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
            conn.execute(query)
        self._databases.append(name)

    def settings(self, variant: str, **overrides: Any) -> Settings:
        """Our settings for one scenario variant: fresh database, own key prefix, open auth."""
        base = Settings(
            redis_url=self.redis_url,
            database_url=self.new_database(),
            key_prefix=f"{self.key_root}:{variant}",
            insecure_open=True,
            http_workers=self.options.http_workers,
            log_level=self.options.log_level,  # type: ignore[arg-type]
            log_format="json",
            worker_heartbeat_file="",
            data_dir=str(self.log_dir / "data"),
        )
        return dataclasses.replace(base, **overrides)

    def cleanup(self) -> None:
        """Stop what is still running, delete every key of this run and drop every
        database it created."""
        self._stack.close()
        self._drop_data(keep_template=False)

    def settle(self) -> None:
        """Between scenarios: drop what the last one left (keys, databases) and flush
        PostgreSQL's dirty pages now, so that the next one is not measured while Redis
        holds the last one's keys or a checkpoint writes out its rows."""
        self._drop_data(keep_template=True)
        with psycopg.connect(self.admin_database_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def _drop_data(self, *, keep_template: bool) -> None:
        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(match=f"{self.key_root}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
        finally:
            client.close()
        kept = [self._template] if keep_template and self._template else []
        dropped = [name for name in reversed(self._databases) if name not in kept]
        with psycopg.connect(self.admin_database_url, autocommit=True) as conn:
            for name in dropped:
                query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                conn.execute(query.format(sql.Identifier(name)))
        self._databases = kept

    # ---- processes -------------------------------------------------------------------

    def enter(self, server: Server) -> Server:
        """Stop ``server`` when the current ``with ctx.scope()`` ends (or, outside one, when
        the run ends)."""
        (self._scope or self._stack).callback(server.stop)
        return server

    @contextlib.contextmanager
    def scope(self) -> Iterator[ExitStack]:
        """Everything started inside is stopped on exit, in reverse order."""
        with ExitStack() as stack:
            previous, self._scope = self._scope, stack
            try:
                yield stack
            finally:
                self._scope = previous

    def _role_env(self, settings: Settings, **extra: str) -> dict[str, str]:
        env = {**os.environ, **settings.to_env(), **extra}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        return env

    def start_role(self, role: str, settings: Settings, name: str, *args: str) -> Server:
        """``fintrack run ROLE`` with ``settings``; HTTP roles are waited for until healthy."""
        port = free_port()
        port_var = "FINTRACK_NOTIFIER_PORT" if role == "notifier" else "FINTRACK_API_PORT"
        server = self.enter(
            spawn(
                name,
                [sys.executable, "-m", "fintrack", "run", role, *args],
                env=self._role_env(settings, **{port_var: str(port)}),
                log_dir=self.log_dir,
            )
        )
        if role in ("api", "notifier"):
            server.port = port
            server.base_url = f"http://127.0.0.1:{port}"
            wait_healthy(server)
        return server

    def start_reference_api(
        self, settings: Settings, name: str, *, workers: int | None = None
    ) -> Server:
        """The reference service (FastAPI + pydantic, one XADD per request) under uvicorn."""
        port = free_port()
        argv = [
            sys.executable, "-m", "uvicorn", "benchmarks.reference.app:app",
            "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers or self.options.http_workers),
            "--log-level", "warning", "--no-access-log",
            # uvicorn closes idle keep-alive connections after 5 s by default; the
            # connection-scale scenario holds them for the whole measurement.
            "--timeout-keep-alive", "600",
            "--backlog", "4096",
        ]  # fmt: skip
        server = self.enter(
            spawn(
                name,
                argv,
                env=self._role_env(settings, **reference_env(settings)),
                log_dir=self.log_dir,
                cwd=REPO_ROOT,
            )
        )
        server.port = port
        server.base_url = f"http://127.0.0.1:{port}"
        wait_healthy(server)
        return server

    def start_reference_worker(self, settings: Settings, name: str) -> Server:
        """The reference worker: one entry, one autocommit INSERT, one XACK at a time."""
        return self.enter(
            spawn(
                name,
                [sys.executable, "-m", "benchmarks.reference.worker"],
                env=self._role_env(settings, **reference_env(settings)),
                log_dir=self.log_dir,
                cwd=REPO_ROOT,
            )
        )


def reference_env(settings: Settings) -> dict[str, str]:
    """What the reference processes read (they do not use fintrack's settings)."""
    return {
        "REF_REDIS_URL": settings.redis_url,
        "REF_DATABASE_URL": settings.database_url,
        "REF_STREAM": settings.txn_stream,
        "REF_EVENT_STREAM": settings.event_stream,
    }


def open_context(options: Options, stack: ExitStack) -> Context:
    """Find (or start) Redis and PostgreSQL on loopback and build the run's context."""
    log_dir = Path(tempfile.mkdtemp(prefix="fintrack-bench-"))
    redis_url = "redis://127.0.0.1:6379/0"
    admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    used = []
    if _answers(6379):
        used.append("redis: the machine's on 127.0.0.1:6379")
    else:
        from fintrack.core.embedded import EmbeddedValkey

        valkey = stack.enter_context(EmbeddedValkey(log_dir / "valkey"))
        redis_url = valkey.url
        used.append(f"redis: embedded valkey on {redis_url}")
    if _answers(5432):
        used.append("postgres: the machine's on 127.0.0.1:5432")
    else:
        from fintrack.core.embedded import EmbeddedPostgres

        pg = stack.enter_context(EmbeddedPostgres(log_dir / "pg", database="postgres"))
        admin_url = pg.url
        used.append(f"postgres: embedded on {admin_url}")
    require_loopback(redis_url)
    require_loopback(admin_url)
    ctx = Context(options, redis_url, admin_url, log_dir, servers_used="; ".join(used))
    stack.callback(ctx.cleanup)
    return ctx
