"""The events archive: every published security event copied into PostgreSQL.

Runs inside every worker (a task of its own, blocking on the events stream with its own
connection) as consumer group ``ARCHIVE_GROUP`` on the events stream. Rows are
keyed by the entry's stream id, so the notifier can replay from PostgreSQL with the very
ids SSE clients saw, once Redis has trimmed them. Copies are idempotent (``ON CONFLICT DO
NOTHING``) and acknowledged only after the commit; the events stream is trimmed only below
what this group has acknowledged, keeping ``stream_retention`` entries for live readers.
"""

from __future__ import annotations

import re
from typing import Any, get_args

import structlog
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.core.events import EVENT_FIELDS, EventKind
from fintrack.core.streams import ARCHIVE_GROUP, ensure_group
from fintrack.fraud._entries import StreamEntry, parse_entries, parse_read
from fintrack.fraud._scripts import Scripts
from fintrack.fraud.store import ArchivedEvent, archive_events

logger = structlog.get_logger(__name__)

READ_COUNT = 1_000  # entries per read; one INSERT each
MAX_READS_PER_STEP = 4  # bounded, so the worker loop is never held up for long


# Canonical UUID text, as the worker publishes it: a malformed one would make PostgreSQL
# refuse the whole COPY, so it is caught here, per entry.
_TXN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_KINDS = frozenset(get_args(EventKind))
_KIND, _TXN, _DATA = (name.encode() for name in EVENT_FIELDS)


def to_row(entry: StreamEntry) -> ArchivedEvent:
    """The ``security_events`` row for an events-stream entry; ``ValueError`` if it is not
    a well-formed event (never expected: only workers write that stream).

    The row is built from the entry's ``kind``/``txn``/``data`` fields, without decoding
    the JSON: that decoding was most of the archive's cost."""
    fields = entry.fields or {}
    try:
        kind = fields[_KIND].decode()
        txn_id = fields[_TXN].decode()
        data = fields[_DATA].decode()
    except KeyError as e:
        raise ValueError(f"event entry has no {e.args[0].decode()!r} field") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"event entry is not UTF-8: {e}") from None
    if kind not in _KINDS:
        raise ValueError(f"not an event kind: {kind[:40]!r}")
    if _TXN_ID.fullmatch(txn_id) is None:
        raise ValueError(f"not a transaction id: {txn_id[:40]!r}")
    ms, _, seq = entry.id.partition("-")
    return ArchivedEvent(int(ms), int(seq), kind, txn_id, data)


class Archiver:
    """Copies new events-stream entries into ``security_events``; one per worker."""

    __slots__ = ("_consumer", "_pending_done", "_pool", "_redis", "_scripts", "_settings", "stream")

    def __init__(
        self,
        redis: Redis,
        pool: AsyncConnectionPool[Any],
        settings: Settings,
        *,
        consumer: str,
        scripts: Scripts,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._pool = pool
        self._settings = settings
        self._consumer = consumer
        self.stream = settings.event_stream
        self._pending_done = False

    async def setup(self) -> bool:
        """Create the archive group (from the stream's start) if missing; True if created."""
        return await ensure_group(self._redis, self.stream, ARCHIVE_GROUP, start_id="0")

    async def step(self, *, reader: Redis | None = None, block_ms: int | None = None) -> int:
        """Archive what is new; returns the number of entries acked.

        With ``reader`` and ``block_ms`` the first read waits up to ``block_ms`` for new
        events on that (dedicated) connection; otherwise nothing blocks. The first step
        after start finishes this consumer's own pending entries."""
        total = 0
        if not self._pending_done:
            cursor = "0"
            while entries := await self._read(self._redis, cursor):
                total += await self._archive(entries)
                cursor = entries[-1].id
            self._pending_done = True
        for i in range(MAX_READS_PER_STEP):
            if i == 0 and reader is not None and block_ms is not None:
                entries = await self._read(reader, ">", block_ms)
            else:
                entries = await self._read(self._redis, ">")
            total += await self._archive(entries)
            if len(entries) < READ_COUNT:
                break
        return total

    async def reclaim(self, min_idle_ms: int) -> int:
        """Take over and archive entries a dead consumer left pending; returns how many."""
        total = 0
        cursor = "0-0"
        while True:
            reply = await self._redis.xautoclaim(
                self.stream,
                ARCHIVE_GROUP,
                self._consumer,
                min_idle_ms,
                start_id=cursor,
                count=READ_COUNT,
            )
            total += await self._archive(parse_entries(reply[1]))
            cursor = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if cursor == "0-0":
                return total

    async def _read(
        self, client: Redis, cursor: str, block_ms: int | None = None
    ) -> list[StreamEntry]:
        reply = await client.xreadgroup(
            ARCHIVE_GROUP, self._consumer, {self.stream: cursor}, count=READ_COUNT, block=block_ms
        )
        return parse_read(reply)

    async def _archive(self, entries: list[StreamEntry]) -> int:
        if not entries:
            return 0
        rows: list[ArchivedEvent] = []
        for entry in entries:
            try:
                rows.append(to_row(entry))
            except ValueError:
                # Nothing to archive and retrying won't help; acked so trimming goes on.
                logger.exception("unarchivable event entry", entry_id=entry.id)
        await archive_events(self._pool, rows)
        return await self._scripts.ack(
            stream=self.stream, group=ARCHIVE_GROUP, ids=[e.id for e in entries]
        )
