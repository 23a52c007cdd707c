"""The api's side of the audit trail (``fintrack.core.audit``): where a request came from."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection

from fintrack.core.audit import record
from fintrack.ingest.state import Resources

__all__ = ["admin_action", "record", "remote_addr"]


def remote_addr(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer address of the connection (the load balancer's, behind one)."""
    client = connection.client
    return client.host if client else ""


async def admin_action(
    connection: ASGIConnection[Any, Any, Any, Any],
    res: Resources,
    admin: str,
    action: str,
    target: str,
    outcome: str,
) -> None:
    """Record what an admin did through the api, and from where."""
    await record(
        res.pool,
        actor=admin,
        action=action,
        target=target,
        remote=remote_addr(connection),
        outcome=outcome,
    )
