"""Waiting for decisions (``Prefer: wait=MS``): a per-process registry of waiters.

Workers publish every decision on the events stream after committing it. One shared tail
task per process reads that stream (XREAD BLOCK on its own connection) while anyone is
waiting, and wakes the waiters of each ``txn`` it sees. A waiter registers *before* its
transaction is handed off, and the tail starts from the stream's last id as of that
registration, so the decision cannot slip past unseen; the caller still checks
PostgreSQL once more when its wait runs out, which covers the tail being down.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final, cast

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger(__name__)

BLOCK_MS: Final = 1_000  # the tail's XREAD BLOCK; its client's socket timeout exceeds it
_READ_COUNT: Final = 500
_ERROR_BACKOFF_S: Final = 0.5

# XREAD as the client returns it (bytes, no decode_responses): [(stream, [(id, fields)])].
_XReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None


class Waiters:
    """Futures keyed by txn id, resolved when the txn's decision event appears."""

    __slots__ = ("_ready", "_redis", "_stream", "_task", "_waiting")

    def __init__(self, redis: Redis, stream: str) -> None:
        """``redis`` is this registry's own client: its reads block for ``BLOCK_MS``."""
        self._redis = redis
        self._stream = stream
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None

    async def register(self, txn_id: str) -> asyncio.Future[None]:
        """A future resolved when ``txn_id``'s decision is published; call ``unregister``
        when done with it. Returns once the tail reads from a point before this call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        # Adding the waiter and checking the tail happen in one step (no await between),
        # so a tail that is about to exit for lack of waiters can't strand this one.
        self._waiting.setdefault(txn_id, set()).add(future)
        if self._task is None or self._task.done():
            self._ready = loop.create_future()
            self._task = asyncio.create_task(self._tail(self._ready), name="decision-tail")
        assert self._ready is not None
        await asyncio.shield(self._ready)
        return future

    def unregister(self, txn_id: str, future: asyncio.Future[None]) -> None:
        """Forget ``future`` (resolved or not)."""
        futures = self._waiting.get(txn_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiting[txn_id]
        future.cancel()

    async def stop(self) -> None:
        """Stop the tail task; pending waiters simply time out."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _tail(self, ready: asyncio.Future[None]) -> None:
        try:
            last_id = await self._start_id()
        finally:
            ready.set_result(None)  # never leave a registration hanging
        while True:
            try:
                reply = cast(
                    _XReadReply,
                    await self._redis.xread(
                        {self._stream: last_id}, count=_READ_COUNT, block=BLOCK_MS
                    ),
                )
            except (RedisError, OSError) as e:
                log.warning("decision tail read failed", error=str(e))
                await asyncio.sleep(_ERROR_BACKOFF_S)
                reply = []
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    last_id = entry_id
                    txn = fields.get(b"txn")
                    if txn is not None:
                        self._wake(txn.decode())
            if not self._waiting:
                self._task = None  # same step as the check: see register()
                return

    async def _start_id(self) -> bytes | str:
        try:
            newest = await self._redis.xrevrange(self._stream, count=1)
        except (RedisError, OSError) as e:
            # Unreachable Redis: the hand-off will fail too. "$" is the best guess left.
            log.warning("decision tail start failed", error=str(e))
            return "$"
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], newest)
        return entries[0][0] if entries else "0-0"

    def _wake(self, txn_id: str) -> None:
        for future in self._waiting.get(txn_id, ()):
            if not future.done():
                future.set_result(None)
