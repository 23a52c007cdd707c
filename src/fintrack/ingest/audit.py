"""The audit trail: one ``audit_log`` row per admin action and per failed authentication.

Writing the row is best effort: if PostgreSQL is down the action's own outcome stands (a
refused login stays refused) and the miss is logged instead. Never pass a secret here.
"""

from __future__ import annotations

from typing import Any

import psycopg
import structlog
from litestar.connection import ASGIConnection
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger(__name__)

_INSERT = (
    "INSERT INTO audit_log (actor, action, target, remote, outcome) VALUES (%s, %s, %s, %s, %s)"
)


def remote_addr(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer address of the connection (the load balancer's, behind one)."""
    client = connection.client
    return client.host if client else ""


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
    row = (actor[:64], action[:64], target[:256], remote[:64], outcome[:64])
    try:
        async with pool.connection(timeout=2.0) as conn:
            await conn.execute(_INSERT, row)
    except psycopg.Error as e:
        log.error("audit row not written", action=action, outcome=outcome, error=str(e))
