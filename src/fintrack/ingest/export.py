"""History export: a client's decided transactions as NDJSON, streamed with flat memory.

Rows come through a server-side cursor a few thousand at a time and leave as soon as a
chunk of lines is full, so memory stays the same for ten rows or ten million.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from fintrack.core.errors import FieldError
from fintrack.ingest.views import CONNECT_TIMEOUT_S, SELECT, FinalStatus, row_to_view

NDJSON: Final = "application/x-ndjson"
_FETCH_ROWS: Final = 2_000
_CHUNK_BYTES: Final = 64 * 1024


class ExportFilter(NamedTuple):
    """Which transactions to export; ``since`` is inclusive, ``until`` exclusive."""

    since: datetime | None = None
    until: datetime | None = None
    status: FinalStatus | None = None
    user_id: str | None = None


def parse_time(field: str, text: str | None) -> datetime | None:
    """An ISO 8601 time (``2026-01-31T12:00:00Z``); no offset means UTC, never the
    database session's time zone."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FieldError(field, f"{text[:40]!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def export_query(client_id: str, wanted: ExportFilter) -> tuple[sql.Composed, dict[str, Any]]:
    """The SQL and parameters selecting ``client_id``'s transactions matching ``wanted``."""
    conditions = [sql.SQL("t.client_id = %(client)s")]
    params: dict[str, Any] = {"client": client_id}
    if wanted.since is not None:
        conditions.append(sql.SQL("t.received_at >= %(since)s"))
        params["since"] = wanted.since
    if wanted.until is not None:
        conditions.append(sql.SQL("t.received_at < %(until)s"))
        params["until"] = wanted.until
    if wanted.status is not None:
        conditions.append(sql.SQL("t.status = %(status)s"))
        params["status"] = wanted.status
    if wanted.user_id is not None:
        conditions.append(sql.SQL("t.user_id = %(user)s"))
        params["user"] = wanted.user_id
    query = sql.Composed(
        [
            sql.SQL(SELECT),
            sql.SQL(" WHERE "),
            sql.SQL(" AND ").join(conditions),
            sql.SQL(" ORDER BY t.received_at, t.txn_id"),
        ]
    )
    return query, params


async def export_lines(
    pool: AsyncConnectionPool[Any], client_id: str, wanted: ExportFilter
) -> AsyncIterator[bytes]:
    """NDJSON chunks (whole lines, about 64 KiB each) of the matching transactions."""
    query, params = export_query(client_id, wanted)
    encoder = msgspec.json.Encoder()
    buffer = bytearray()
    async with (
        pool.connection(timeout=CONNECT_TIMEOUT_S) as conn,
        conn.cursor(name="export") as cur,
    ):
        cur.itersize = _FETCH_ROWS
        await cur.execute(query, params)
        async for row in cur:
            encoder.encode_into(row_to_view(row), buffer, -1)
            buffer += b"\n"
            if len(buffer) >= _CHUNK_BYTES:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)
