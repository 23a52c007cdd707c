"""``/admin/keys``: issue, list and revoke API keys without a restart; all audited.

Rotating a client's key: issue a second key with the same name (both work), move the
client to it, revoke the old one. Revocation takes effect on this replica at once and on
the others within ``FINTRACK_KEY_REFRESH_S``.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody

from fintrack.core import apikeys
from fintrack.core.apikeys import ApiKey, IssuedKey
from fintrack.ingest import audit
from fintrack.ingest.auth import admin_name, require_admin
from fintrack.ingest.openapi import SECURITY
from fintrack.ingest.problems import problem_spec
from fintrack.ingest.state import resources_of

_ERRORS = {401: problem_spec("Missing or invalid admin token (an API key is not enough).")}
_BODY_ERRORS = {
    400: problem_spec("Malformed JSON."),
    422: problem_spec("A field is invalid; `errors` names it."),
}


class NewKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Which client the new key is for: its transactions are filed under this name."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[\w.@:+-]+$(?!\n)")]


class KeyList(msgspec.Struct, frozen=True):
    """Clients with a key in FINTRACK_API_KEYS (fixed until restart), and issued keys."""

    configured: list[str]
    issued: list[ApiKey]


class KeysController(Controller):
    """API key management for admins (an API key is not enough)."""

    path = "/admin/keys"
    guards = [require_admin]  # noqa: RUF012 -- Litestar's declared attribute type
    dependencies = {"admin": Provide(admin_name, sync_to_thread=False)}  # noqa: RUF012
    security = SECURITY
    tags = ["admin"]  # noqa: RUF012

    @get("/", summary="List API keys", responses=_ERRORS)
    async def list_keys(
        self, request: Request[Any, Any, Any], admin: NamedDependency[str]
    ) -> KeyList:
        res = resources_of(request)
        issued = await apikeys.list_keys(res.pool)
        await audit.admin_action(request, res, admin, "keys.list", "", "ok")
        return KeyList(sorted(set(res.settings.api_key_hashes.values())), issued)

    @post(
        "/",
        status_code=201,
        summary="Issue an API key",
        description="The secret is in this answer only; it is stored as a SHA-256 digest. "
        "A name that already has keys gets one more (that is how a key is rotated).",
        responses=_ERRORS | _BODY_ERRORS,
    )
    async def issue(
        self, request: Request[Any, Any, Any], admin: NamedDependency[str], data: JSONBody[NewKey]
    ) -> Response[IssuedKey]:
        res = resources_of(request)
        issued = await apikeys.create(res.pool, res.redis, res.settings, data.name, actor=admin)
        await res.keyring.refresh(force=True)
        await audit.admin_action(
            request, res, admin, "keys.create", f"{issued.id} {issued.name}", "ok"
        )
        return Response(issued, status_code=201, headers={"Cache-Control": "no-store"})

    @delete(
        "/{key_id:uuid}",
        status_code=204,
        summary="Revoke an API key",
        description="At once on this replica, within FINTRACK_KEY_REFRESH_S on the others.",
        responses=_ERRORS | {404: problem_spec("No such key, or already revoked.")},
    )
    async def revoke(
        self, request: Request[Any, Any, Any], admin: NamedDependency[str], key_id: FromPath[UUID]
    ) -> None:
        res = resources_of(request)
        revoked = await apikeys.revoke(res.pool, res.redis, res.settings, str(key_id))
        if revoked is None:
            await audit.admin_action(request, res, admin, "keys.revoke", str(key_id), "not_found")
            raise NotFoundException(f"no active key {key_id}")
        await res.keyring.refresh(force=True)
        await audit.admin_action(
            request, res, admin, "keys.revoke", f"{key_id} {revoked.name}", "ok"
        )
