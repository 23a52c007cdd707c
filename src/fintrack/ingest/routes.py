"""``/transactions``: submit one or a batch, read one back, export the history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final
from uuid import UUID

import psycopg
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter
from litestar.response import Stream
from redis.exceptions import RedisError

from fintrack.config import TEXT_CEILING
from fintrack.core.errors import FieldError, UnavailableError
from fintrack.core.models import USER_ID_PATTERN, Transaction, validate_request
from fintrack.ingest.auth import authenticated_client, client_id, limit_reads, require_client
from fintrack.ingest.batch import BatchResult, handle_batch
from fintrack.ingest.body import decode_items, decode_transaction
from fintrack.ingest.export import NDJSON, ExportFilter, export_lines, parse_time
from fintrack.ingest.handoff import idempotency_key, idempotency_owner
from fintrack.ingest.openapi import SECURITY
from fintrack.ingest.problems import problem_spec
from fintrack.ingest.ratelimit import RateLimited
from fintrack.ingest.state import Resources, resources_of
from fintrack.ingest.submission import counting_rejections, hand_off, location, now_ms
from fintrack.ingest.views import Accepted, FinalStatus, TransactionView, fetch_one

log = structlog.get_logger(__name__)


_ERRORS: Final = {
    400: problem_spec("Malformed JSON."),
    401: problem_spec("Missing or invalid API key."),
    413: problem_spec("Body (or batch) too large."),
    422: problem_spec("A field is invalid; `errors` names it."),
    429: problem_spec("Rate limit of this API key exceeded; retry after `Retry-After` s."),
    503: problem_spec("Redis can't take the transaction; nothing was accepted. Retry-After."),
}


# Reads: authenticated, then counted against the client's rate limit, before any parameter.
_READ_GUARDS: Final = [require_client, limit_reads]
_READ_CLIENT: Final = {"client": Provide(client_id, sync_to_thread=False)}


def wait_preference(prefer: str | None, cap_ms: int) -> int:
    """Milliseconds asked for by ``Prefer: wait=MS`` (0 if absent), capped at ``cap_ms``."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.partition(";")[0].partition("=")
        if name.strip().lower() == "wait":
            try:
                return max(0, min(int(value.strip().strip('"')), cap_ms))
            except ValueError:
                return 0  # RFC 7240: a preference we can't understand is ignored
    return 0


def _accepted(txn_id: str) -> Response[Accepted]:
    return Response(Accepted(txn_id), status_code=202, headers={"Location": location(txn_id)})


class TransactionController(Controller):
    """Ingest for API clients; each client sees only its own transactions."""

    path = "/transactions"
    # Submissions authenticate in this dependency (no guard: Litestar copies the handler
    # for each guard call); reads, less hot, keep the guards and override it.
    dependencies = {"client": Provide(authenticated_client)}  # noqa: RUF012
    security = SECURITY
    tags = ["transactions"]  # noqa: RUF012

    @post(
        "/",
        status_code=202,
        responses={
            202: ResponseSpec(
                Accepted, description="Durably queued; `Location` names the transaction."
            ),
            200: ResponseSpec(TransactionView, description="Decided within `Prefer: wait`."),
            409: problem_spec("txn_id already used with another body or by another client."),
            **_ERRORS,
        },
        summary="Submit a transaction",
        description="202 once the transaction is durably queued. With `Prefer: wait=MS` "
        "(capped by FINTRACK_MAX_WAIT_MS) waits for the decision and answers 200 with it "
        "if it comes in time. Replaying the same txn_id and body repeats the answer.",
    )
    async def submit(
        self,
        request: Request[Any, Any, Any],
        client: NamedDependency[str],
        prefer: Annotated[
            str | None,
            HeaderParameter(name="Prefer", required=False, description="`wait=MS`: wait for it."),
        ] = None,
    ) -> Response[Accepted | TransactionView]:
        res = resources_of(request)
        with counting_rejections():
            txn = validate_request(
                decode_transaction(await request.body(), res.limits),
                client_id=client,
                received_at_ms=now_ms(),
                defaults=res.defaults,
            )
            structlog.contextvars.bind_contextvars(txn_id=str(txn.txn_id))
            wait_ms = wait_preference(prefer, res.settings.max_wait_ms)
            if wait_ms:
                return await self._submit_and_wait(res, txn, wait_ms)
            await hand_off(res, txn)
        return _accepted(str(txn.txn_id))  # type: ignore[return-value]

    async def _submit_and_wait(
        self, res: Resources, txn: Transaction, wait_ms: int
    ) -> Response[Accepted | TransactionView]:
        txn_id = str(txn.txn_id)
        # Registered before the hand-off, so the decision can't be published unseen.
        decided = await res.waiters.register(txn_id)
        try:
            await hand_off(res, txn)
            try:
                async with asyncio.timeout(wait_ms / 1000):
                    await decided
            except TimeoutError:
                pass  # the final look in PostgreSQL below still catches a late event
        finally:
            res.waiters.unregister(txn_id, decided)
        view = await _lookup(res, txn.client_id, txn.txn_id)
        if view is None:
            return _accepted(txn_id)  # type: ignore[return-value]
        return Response(view, status_code=200, headers={"Preference-Applied": f"wait={wait_ms}"})

    @post(
        "/batch",
        status_code=200,
        responses=_ERRORS,
        summary="Submit a batch of transactions",
        description="Up to FINTRACK_MAX_BATCH_ITEMS transactions in one request and one "
        "Redis round trip; one result per item, in order. Invalid items don't stop valid "
        "ones; each carries its own problem in `error`. Each item counts against the "
        "API key's rate limit; items over it get a 429 problem and the response a "
        "`Retry-After` header.",
    )
    async def submit_batch(
        self, request: Request[Any, Any, Any], client: NamedDependency[str]
    ) -> Response[BatchResult]:
        res = resources_of(request)
        with counting_rejections():
            items = decode_items(
                await request.body(), res.settings.max_batch_items, res.limits.max_depth
            )
        result, retry_after_ms = await handle_batch(res, client, items, now_ms())
        headers = (
            {"Retry-After": RateLimited(retry_after_ms).retry_after_s} if retry_after_ms else {}
        )
        return Response(result, headers=headers)

    @get(
        "/{txn_id:uuid}",
        guards=_READ_GUARDS,
        dependencies=_READ_CLIENT,
        responses={
            404: problem_spec("Unknown transaction, or another client's."),
            **_ERRORS,
        },
        summary="Read a transaction",
        description="The decision, risk score and reasons once decided; "
        '`{"txn_id", "status": "PENDING"}` while queued.',
    )
    async def read(
        self, request: Request[Any, Any, Any], client: NamedDependency[str], txn_id: FromPath[UUID]
    ) -> TransactionView | Accepted:
        res = resources_of(request)
        structlog.contextvars.bind_contextvars(txn_id=str(txn_id))
        view = await _lookup(res, client, txn_id)
        if view is not None:
            return view
        try:
            owner = await res.redis.get(idempotency_key(res.settings, str(txn_id)))
        except (RedisError, OSError) as e:
            log.warning("idempotency lookup failed", error=repr(e))
            raise UnavailableError("Redis is unavailable") from e
        if owner is not None and idempotency_owner(owner) == client:
            return Accepted(str(txn_id))
        raise NotFoundException(f"no transaction {txn_id}")

    @get(
        "/",
        guards=_READ_GUARDS,
        dependencies=_READ_CLIENT,
        media_type=NDJSON,
        responses=_ERRORS,
        summary="Export transaction history",
        description="Your decided transactions as NDJSON (one object per line, the shape "
        "of GET /transactions/{txn_id}), oldest first. `since` is inclusive, `until` "
        "exclusive; times without an offset are UTC.",
    )
    async def export(
        self,
        request: Request[Any, Any, Any],
        client: NamedDependency[str],
        since: Annotated[str | None, QueryParameter(format="date-time")] = None,
        until: Annotated[str | None, QueryParameter(format="date-time")] = None,
        status: FromQuery[FinalStatus | None] = None,
        user_id: Annotated[
            str | None, QueryParameter(max_length=TEXT_CEILING, pattern=USER_ID_PATTERN)
        ] = None,
    ) -> Stream:
        res = resources_of(request)
        for name in ExportFilter._fields:
            # Each filter takes one value: a repeated one would silently drop the others.
            if len(request.query_params.getall(name, [])) > 1:
                raise FieldError(name, "must be given at most once")
        if user_id is not None and len(user_id) > res.settings.max_text_length:
            # No user id that long can exist (FINTRACK_MAX_TEXT_LENGTH).
            raise FieldError("user_id", f"must be at most {res.settings.max_text_length} long")
        wanted = ExportFilter(
            parse_time("since", since), parse_time("until", until), status, user_id
        )
        chunks = export_lines(res.pool, client, wanted)
        try:
            # The first chunk is read before the 200 goes out: a dead database is a 503.
            first = await anext(chunks, b"")
        except psycopg.OperationalError as e:
            log.warning("export failed to start", error=repr(e))
            raise UnavailableError("PostgreSQL is unavailable") from e
        return Stream(_prepend(first, chunks), media_type=NDJSON)


async def _prepend(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


async def _lookup(res: Resources, client: str, txn_id: UUID) -> TransactionView | None:
    try:
        return await fetch_one(res.pool, client, txn_id)
    except psycopg.OperationalError as e:
        log.warning("transaction lookup failed", error=repr(e))
        raise UnavailableError("PostgreSQL is unavailable") from e
