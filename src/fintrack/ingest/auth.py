"""Who is calling: API keys for ingest clients, admin tokens for ``/admin``.

Both come as ``Authorization: Bearer <secret>`` or ``X-API-Key: <secret>``. A refusal is
the same 401 whatever was wrong (missing, unknown, or the wrong kind of credential), is
audited, and never echoes or logs the secret. With ``insecure_open`` nobody is asked and
every caller is ``anonymous``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from fintrack.core.auth import bearer_secret, identify
from fintrack.ingest import audit
from fintrack.ingest.state import resources_of, settings_of

ANONYMOUS: Final = "anonymous"
_CLIENT: Final = "client_id"
_ADMIN: Final = "admin_name"
_CHALLENGE: Final = {"WWW-Authenticate": 'Bearer realm="fintrack"'}


async def _authenticate(
    connection: ASGIConnection[Any, Any, Any, Any], digests: Mapping[str, str], action: str
) -> str:
    headers = connection.headers
    name = identify(bearer_secret(headers.get("authorization"), headers.get("x-api-key")), digests)
    if name is None:
        await audit.record(
            resources_of(connection).pool,
            actor="unknown",
            action=action,
            target=f"{connection.scope.get('method', '')} {connection.url.path}",
            remote=audit.remote_addr(connection),
            outcome="denied",
        )
        raise NotAuthorizedException("missing or invalid credentials", headers=_CHALLENGE)
    return name


async def require_client(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: the caller presents a valid API key (or the api runs open)."""
    settings = settings_of(connection)
    name = ANONYMOUS
    if settings.auth_enabled:
        name = await _authenticate(connection, settings.api_key_hashes, "auth.client")
    connection.state[_CLIENT] = name


async def require_admin(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: the caller presents a valid admin token (an API key is not enough)."""
    settings = settings_of(connection)
    name = ANONYMOUS
    if settings.auth_enabled:
        name = await _authenticate(connection, settings.admin_token_hashes, "auth.admin")
    connection.state[_ADMIN] = name


def client_id(request: Request[Any, Any, Any]) -> str:
    """Dependency: the API client authenticated by ``require_client``."""
    name: str = request.state[_CLIENT]
    return name


def admin_name(request: Request[Any, Any, Any]) -> str:
    """Dependency: the admin authenticated by ``require_admin``."""
    name: str = request.state[_ADMIN]
    return name
