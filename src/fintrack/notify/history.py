"""History for resuming feeds: events after a client's Last-Event-ID, in stream order.

Recent events are still in the Redis stream; older ones were trimmed from it and live only
in PostgreSQL's ``security_events`` archive. Workers trim the stream only below what they
archived, so whatever is missing from Redis is in PostgreSQL. Each step reads the stream's
oldest retained id and a page of entries in one MULTI, so the page and the boundary agree
even while trimming runs: everything between our cursor and that boundary comes from the
archive (through a server-side cursor: memory stays flat however long the gap), the page
from Redis.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import msgspec
import structlog
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from fintrack.notify.frames import (
    EventId,
    Frame,
    format_event_id,
    frame_from_row,
    frames_from_entries,
    parse_event_id,
)

log = structlog.get_logger(__name__)

_PAGE = 1_000  # stream entries per XRANGE
_ROWS_PER_FETCH = 2_000  # archive rows per round trip of the server-side cursor

# Row comparisons use the (id_ms, id_seq) primary key as a range scan.
_ARCHIVED = """
SELECT id_ms, id_seq, data
FROM security_events
WHERE (id_ms, id_seq) > (%(after_ms)s, %(after_seq)s)
  AND (id_ms, id_seq) <= (%(upto_ms)s, %(upto_seq)s)
  AND (id_ms, id_seq) < (%(before_ms)s, %(before_seq)s)
ORDER BY id_ms, id_seq
"""
_LAST_ARCHIVED = (
    "SELECT id_ms, id_seq FROM security_events ORDER BY id_ms DESC, id_seq DESC LIMIT 1"
)
_NO_BOUND: EventId = (2**63 - 1, 2**63 - 1)  # above any bigint pair in the archive


class History:
    """Reads events by id range from the Redis stream and the PostgreSQL archive."""

    def __init__(self, redis: Redis, pool: AsyncConnectionPool[Any], stream: str) -> None:
        self._redis = redis
        self._pool = pool
        self._stream = stream

    async def replay(self, after: EventId, upto: EventId) -> AsyncGenerator[Frame]:
        """Every event with ``after < id <= upto``, each once, in id order.

        Use inside ``contextlib.aclosing`` so an abandoned replay returns its database
        connection at once rather than when the generator is garbage collected.
        """
        cursor = after
        while cursor < upto:
            oldest, page = await self._snapshot(cursor, upto)
            if oldest is None or oldest > cursor:
                # Entries between the cursor and the oldest retained one (if any) were
                # trimmed from Redis: read them from the archive first.
                before = oldest if oldest is not None else _NO_BOUND
                async for frame in self._archived(cursor, upto, before):
                    yield frame
                    cursor = frame.id
            for frame in page:
                yield frame
                cursor = frame.id
            if oldest is None or len(page) < _PAGE:
                # The page reached ``upto`` (or the stream holds nothing): done.
                return

    async def last_archived(self) -> EventId | None:
        """The newest id in the archive, or None if it is empty."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(_LAST_ARCHIVED)
            row = await cur.fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    async def _snapshot(self, after: EventId, upto: EventId) -> tuple[EventId | None, list[Frame]]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xrange(self._stream, "-", "+", count=1)
            pipe.xrange(
                self._stream,
                "(" + format_event_id(after),
                format_event_id(upto),
                count=_PAGE,
            )
            first, entries = await pipe.execute()
        oldest = parse_event_id(first[0][0]) if first else None
        return oldest, frames_from_entries(entries)

    async def _archived(
        self, after: EventId, upto: EventId, before: EventId
    ) -> AsyncGenerator[Frame]:
        params = {
            "after_ms": after[0],
            "after_seq": after[1],
            "upto_ms": upto[0],
            "upto_seq": upto[1],
            "before_ms": before[0],
            "before_seq": before[1],
        }
        async with (
            self._pool.connection() as conn,
            conn.cursor(name="fintrack_replay") as cur,
        ):
            cur.itersize = _ROWS_PER_FETCH
            await cur.execute(_ARCHIVED, params)
            async for id_ms, id_seq, data in cur:
                try:
                    frame = frame_from_row(id_ms, id_seq, data)
                except msgspec.DecodeError as e:
                    log.error(
                        "unreadable archived event skipped",
                        entry_id=format_event_id((id_ms, id_seq)),
                        error=str(e),
                    )
                    continue
                yield frame
