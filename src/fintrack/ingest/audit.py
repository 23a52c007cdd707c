"""The api's side of the audit trail (``fintrack.core.audit``): where a request came from."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection

from fintrack.core.audit import record

__all__ = ["record", "remote_addr"]


def remote_addr(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer address of the connection (the load balancer's, behind one)."""
    client = connection.client
    return client.host if client else ""
