"""The audit trail: one ``audit_log`` row per admin action and per failed authentication.

Every role (and the CLI) writes through ``record``: who (``actor``), what (``action`` on
``target``), from where (``remote``), with which ``outcome``; PostgreSQL adds when. Writing
the row is best effort: if PostgreSQL is down the action's own outcome stands (a refused
login stays refused) and the miss is logged instead. Never pass a secret here.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger(__name__)

_INSERT = (
    "INSERT INTO audit_log (actor, action, target, remote, outcome) VALUES (%s, %s, %s, %s, %s)"
)


# Control characters would let a request path forge rows in a text export, and a NUL would
# make PostgreSQL refuse the row: a failed login could then go unaudited.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _printable(text: str) -> str:
    # Lone surrogates (undecodable bytes in a path) can't be encoded for PostgreSQL either.
    text = text.encode("utf-8", "backslashreplace").decode()
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


async def record(
    pool: AsyncConnectionPool[Any],
    *,
    actor: str,
    action: str,
    target: str,
    remote: str,
    outcome: str,
) -> None:
    """Append one audit row; a database failure is logged, not raised."""
    row = tuple(
        _printable(value)[:limit]
        for value, limit in ((actor, 64), (action, 64), (target, 256), (remote, 64), (outcome, 64))
    )
    try:
        async with pool.connection(timeout=2.0) as conn:
            await conn.execute(_INSERT, row)
    except psycopg.Error as e:
        log.error("audit row not written", action=action, outcome=outcome, error=str(e))
