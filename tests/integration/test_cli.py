"""The ``fintrack`` command as an operator uses it: migrate, blocklist, help, bad settings."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from conftest import Services
from fintrack.config import Settings
from fintrack.core.db import migrate, migrations


def fintrack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FINTRACK_")}
    return subprocess.run(
        [sys.executable, "-m", "fintrack", *args],
        env={**clean, "FINTRACK_LOG_FORMAT": "json", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def empty_database(services: Services) -> Iterator[str]:
    """A database with no schema at all, dropped afterwards."""
    name = f"fintrack_empty_{secrets.token_hex(5)}"
    with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield services.database_url(name)
    finally:
        with psycopg.connect(services.admin_database_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_db_migrate_applies_every_migration_once(empty_database: str) -> None:
    """`fintrack db migrate` creates the schema, then finds nothing left to do."""
    env = {"FINTRACK_DATABASE_URL": empty_database}
    first = fintrack("db", "migrate", env=env)
    assert first.returncode == 0, first.stderr
    for _, name, _ in migrations():
        assert name in first.stdout
    again = fintrack("db", "migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert "schema is up to date" in again.stdout
    with psycopg.connect(empty_database) as conn:
        versions = conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    assert [v for (v,) in versions] == [v for v, _, _ in migrations()]


def test_concurrent_migrations_are_safe(empty_database: str) -> None:
    """Several containers migrating at once: all succeed, each migration is applied once."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FINTRACK_")},
        "FINTRACK_DATABASE_URL": empty_database,
        "FINTRACK_LOG_FORMAT": "json",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "fintrack", "db", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), outputs
    applied = [out for out, _ in outputs if "applied:" in out]
    assert len(applied) == 1, outputs  # exactly one of them did the work
    with psycopg.connect(empty_database) as conn:
        (count,) = conn.execute("SELECT count(*) FROM schema_migrations").fetchone() or (0,)
    assert count == len(migrations())


def test_missing_database_url_is_named() -> None:
    """Without FINTRACK_DATABASE_URL, migrate exits 2 naming the variable."""
    result = fintrack("db", "migrate")
    assert result.returncode == 2
    assert "FINTRACK_DATABASE_URL" in result.stderr


def test_bad_setting_is_named_and_nothing_starts() -> None:
    """A malformed setting stops the role before it starts, naming the variable."""
    result = fintrack("run", "api", env={"FINTRACK_API_PORT": "eighty"})
    assert result.returncode == 2
    assert "FINTRACK_API_PORT" in result.stderr


def test_short_session_secret_stops_the_notifier_without_echoing_it() -> None:
    """A session secret under 32 characters exits 2 naming FINTRACK_SESSION_SECRET; neither
    output holds the value."""
    short = "too-short-" + secrets.token_hex(8)
    result = fintrack("run", "notifier", env={"FINTRACK_SESSION_SECRET": short})
    assert result.returncode == 2
    assert "FINTRACK_SESSION_SECRET" in result.stderr
    assert short not in result.stderr + result.stdout


def test_role_help_is_available() -> None:
    """`fintrack run api --help` documents its options without starting anything."""
    result = fintrack("run", "api", "--help")
    assert result.returncode == 0
    assert "--port" in result.stdout
    assert "--host" in result.stdout


def test_blocklist_commands_round_trip(settings: Settings) -> None:
    """`blocklist add|list|remove` change the table and refuse a malformed network."""
    env = settings.to_env()
    added = fintrack("blocklist", "add", "198.51.100.7", "--reason", "card testing", env=env)
    assert added.returncode == 0, added.stderr
    assert "198.51.100.7/32" in added.stdout
    listed = fintrack("blocklist", "list", env=env)
    assert "198.51.100.7/32\tcard testing" in listed.stdout
    bad = fintrack("blocklist", "add", "10.0.0.1/8", env=env)  # host bits set
    assert bad.returncode == 2
    assert "network" in bad.stderr
    removed = fintrack("blocklist", "remove", "198.51.100.7", env=env)
    assert removed.returncode == 0, removed.stderr
    again = fintrack("blocklist", "remove", "198.51.100.7", env=env)
    assert again.returncode == 1
    assert "198.51.100.7/32" not in fintrack("blocklist", "list", env=env).stdout


def test_migration_0003_keeps_the_previous_workers_archive_working(empty_database: str) -> None:
    """Expand first: on a schema at 0002 with archived events, 0003 applies, and both the
    previous release's COPY (filter columns filled) and this release's (left to empty
    defaults, never NULL, which the previous notifier could not read) work, as they must
    while old and new workers run side by side during a rolling deploy."""
    with psycopg.connect(empty_database) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, text in migrations():
            if version <= 2:
                conn.execute(text.encode())
                conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, name))
        conn.execute(
            "INSERT INTO security_events VALUES"
            " (1, 0, 'decision', gen_random_uuid(), 'u1', 'APPROVED', 'info', '{}', '{}')"
        )
    assert migrate(empty_database) == ["0003_lean_event_archive.sql"]
    with psycopg.connect(empty_database) as conn:
        old_columns = "id_ms, id_seq, kind, txn_id, user_id, status, severity, rules, data"
        with conn.cursor().copy(f"COPY security_events ({old_columns}) FROM STDIN") as copy:
            copy.write_row((2, 0, "alert", str(uuid.uuid4()), "u2", "BLOCKED", "high", ["x"], "{}"))
        with conn.cursor().copy(
            "COPY security_events (id_ms, id_seq, kind, txn_id, data) FROM STDIN"
        ) as copy:
            copy.write_row((3, 0, "decision", str(uuid.uuid4()), "{}"))
        rows = conn.execute(
            "SELECT id_ms, user_id, status, severity, rules FROM security_events ORDER BY id_ms"
        ).fetchall()
    assert rows == [
        (1, "u1", "APPROVED", "info", []),
        (2, "u2", "BLOCKED", "high", ["x"]),
        (3, "", "", "", []),
    ]
