"""``/admin/blocklist``: list, add and remove blocked networks; every action is audited."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, JSONBody

from fintrack.core import blocklist
from fintrack.core.blocklist import BlockedNetwork
from fintrack.core.errors import FieldError
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


class NewBlock(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A network to block: a single address or a CIDR range (host bits zero)."""

    network: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    # No control characters: the reason is shown in decisions, logs and the dashboard.
    reason: Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")] = ""


class Blocked(msgspec.Struct, frozen=True):
    """A network as stored: canonical CIDR text."""

    network: str
    reason: str


class BlocklistController(Controller):
    """Blocklist management for admins (an API key is not enough)."""

    path = "/admin/blocklist"
    guards = [require_admin]  # noqa: RUF012 -- Litestar's declared attribute type
    dependencies = {"admin": Provide(admin_name, sync_to_thread=False)}  # noqa: RUF012
    security = SECURITY
    tags = ["admin"]  # noqa: RUF012

    @get("/", summary="List blocked networks", responses=_ERRORS)
    async def list_blocked(
        self, request: Request[Any, Any, Any], admin: NamedDependency[str]
    ) -> list[BlockedNetwork]:
        res = resources_of(request)
        entries = await blocklist.load(res.pool)
        await audit.admin_action(request, res, admin, "blocklist.list", "", "ok")
        return entries

    @post(
        "/",
        status_code=201,
        summary="Block a network (or update its reason)",
        responses=_ERRORS | _BODY_ERRORS,
    )
    async def add(
        self, request: Request[Any, Any, Any], admin: NamedDependency[str], data: JSONBody[NewBlock]
    ) -> Blocked:
        res = resources_of(request)
        try:
            network = await blocklist.add(
                res.pool, res.redis, res.settings, data.network, reason=data.reason, actor=admin
            )
        except FieldError:
            await audit.admin_action(request, res, admin, "blocklist.add", data.network, "invalid")
            raise
        await audit.admin_action(request, res, admin, "blocklist.add", network, "ok")
        return Blocked(network, data.reason[:200])

    @delete(
        "/{network:path}",
        status_code=204,
        summary="Unblock a network",
        responses=_ERRORS
        | {
            404: problem_spec("Not on the blocklist."),
            422: problem_spec("Not an IP address or CIDR range."),
        },
    )
    async def remove(
        self, request: Request[Any, Any, Any], admin: NamedDependency[str], network: FromPath[str]
    ) -> None:
        res = resources_of(request)
        target = network.lstrip("/")
        try:
            removed = await blocklist.remove(res.pool, res.redis, res.settings, target)
        except FieldError:
            await audit.admin_action(request, res, admin, "blocklist.remove", target, "invalid")
            raise
        await audit.admin_action(
            request, res, admin, "blocklist.remove", target, "ok" if removed else "not_found"
        )
        if not removed:
            raise NotFoundException(f"{target} is not on the blocklist")
