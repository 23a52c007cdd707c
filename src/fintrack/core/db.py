"""PostgreSQL: the connection pool every role uses, and schema migrations."""

from __future__ import annotations

import importlib.resources
import re

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from fintrack.config import Settings

log = structlog.get_logger(__name__)

# Any constant works; it only has to be the same for every process that migrates.
_MIGRATION_LOCK = 0x46_54_4D_49_47  # "FTMIG"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


async def open_pool(
    settings: Settings,
    *,
    min_size: int = 1,
    max_size: int = 10,
    autocommit: bool = False,
    check: bool = True,
) -> AsyncConnectionPool:
    """An opened pool. ``check``: each connection is checked (a round trip) before use, so
    a request after a database restart does not fail. A caller that retries on its own
    may skip that; a broken connection is dropped when it comes back to the pool either
    way. ``autocommit``: each statement commits by itself unless inside
    ``conn.transaction()`` (no ``BEGIN``/``COMMIT`` round trips around one statement)."""
    settings.require("database_url")
    pool = AsyncConnectionPool(
        settings.database_url,
        open=False,
        min_size=min_size,
        max_size=max_size,
        check=AsyncConnectionPool.check_connection if check else None,
        kwargs={"application_name": "fintrack", "autocommit": autocommit},
        timeout=10.0,
        reconnect_timeout=60.0,
    )
    await pool.open(wait=False)
    return pool


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every migration shipped in the package, in order."""
    found = []
    for entry in importlib.resources.files("fintrack.core.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text("utf-8")))
    return sorted(found)


def migrate(database_url: str) -> list[str]:
    """Apply pending migrations; return the names applied (empty when up to date).

    Safe when several containers start at once: a transaction-scoped advisory lock lets one
    migrate while the others wait, then find nothing left to do.
    """
    applied: list[str] = []
    with psycopg.connect(database_url, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        rows = conn.execute("SELECT version FROM schema_migrations").fetchall()
        done = {version for (version,) in rows}
        for version, name, sql in migrations():
            if version in done:
                continue
            conn.execute(sql.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            applied.append(name)
        conn.commit()
    for name in applied:
        log.info("migration applied", migration=name)
    return applied
