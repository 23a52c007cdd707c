"""Who is calling: API keys for ingest clients, admin tokens for ``/admin``.

Both come as ``Authorization: Bearer <secret>`` or ``X-API-Key: <secret>``. API keys are
looked up in the process's ``KeyRing`` (configured plus issued keys); admin tokens are the
configured ones. A refusal is the same 401 whatever was wrong (missing, unknown, or the
wrong kind of credential), is audited, and never echoes or logs the secret. With
``insecure_open`` nobody is asked and every caller is ``anonymous``.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

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


async def _refuse(connection: ASGIConnection[Any, Any, Any, Any], action: str) -> NoReturn:
    await audit.record(
        resources_of(connection).pool,
        actor="unknown",
        action=action,
        target=f"{connection.scope.get('method', '')} {connection.url.path}",
        remote=audit.remote_addr(connection),
        outcome="denied",
    )
    raise NotAuthorizedException("missing or invalid credentials", headers=_CHALLENGE)


def _presented(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    headers = connection.headers
    return bearer_secret(headers.get("authorization"), headers.get("x-api-key"))


async def _client_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    if not settings_of(connection).auth_enabled:
        return ANONYMOUS
    name = await resources_of(connection).keyring.identify(_presented(connection))
    if name is None:
        await _refuse(connection, "auth.client")
    return name


async def require_client(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: the caller presents a valid API key (or the api runs open)."""
    connection.state[_CLIENT] = await _client_of(connection)


async def authenticated_client(request: Request[Any, Any, Any]) -> str:
    """Dependency: the API client presenting a valid API key (``anonymous`` when the api
    runs open); refuses exactly as ``require_client`` does.

    For the hot submit routes: Litestar copies the route handler for every guard call,
    which costs more than the authentication itself; a dependency is resolved without."""
    return await _client_of(request)


async def require_admin(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: the caller presents a valid admin token (an API key is not enough)."""
    settings = settings_of(connection)
    name: str | None = ANONYMOUS
    if settings.auth_enabled:
        name = identify(_presented(connection), settings.admin_token_hashes)
        if name is None:
            await _refuse(connection, "auth.admin")
    connection.state[_ADMIN] = name


async def limit_reads(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard (after ``require_client``): count a request that doesn't hand anything off
    against the client's rate limit (submissions are counted by the hand-off itself)."""
    await resources_of(connection).rate_gate.take(connection.state[_CLIENT])


def client_id(request: Request[Any, Any, Any]) -> str:
    """Dependency: the API client authenticated by the ``require_client`` guard."""
    name: str = request.state[_CLIENT]
    return name


def admin_name(request: Request[Any, Any, Any]) -> str:
    """Dependency: the admin authenticated by ``require_admin``."""
    name: str = request.state[_ADMIN]
    return name
