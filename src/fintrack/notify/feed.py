"""One client's event stream: history after its Last-Event-ID, then live frames.

The subscription is taken before the history is read, so every event is either in the
history (id up to the subscription's start) or in the live buffer (id after it): nothing
falls between the two. Live frames are de-duplicated by id against what was already sent.
The stream ends by itself after the configured lifetime (the client reconnects with
Last-Event-ID), on shutdown, or when the client was too slow and its buffer overflowed.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from typing import Final

import anyio
import psycopg
import structlog
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Scope, Send
from redis.exceptions import RedisError

from fintrack.notify import metrics
from fintrack.notify.filters import EventFilter
from fintrack.notify.frames import PING, EventId, Frame, format_event_id, id_only_frame
from fintrack.notify.frames import retry_frame as _retry_frame
from fintrack.notify.history import History
from fintrack.notify.hub import Hub, Subscription

log = structlog.get_logger(__name__)

_CHUNK_BYTES: Final = 64 * 1024  # coalesce frames up to this size into one write
# How long a closed subscription's writer may stay blocked on a client that doesn't read.
_STUCK_GRACE_S: Final = 1.0

# `Connection: close`: when a feed ends (lifetime, overflow, shutdown) the connection goes
# with it, kernel buffers included, instead of idling in keep-alive; EventSource reconnects.
SSE_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "close"}


@dataclass(frozen=True, slots=True)
class FeedOptions:
    retry_ms: int
    heartbeat_s: float
    lifetime_s: float
    admin: str = ""  # who is watching, for the log line of the feed
    remote: str = ""


class _Cursor:
    """What this client has been told: the newest event id processed (sent or filtered
    out) and the newest id the client knows (its Last-Event-ID if it reconnected now)."""

    __slots__ = ("acknowledged", "last")

    def __init__(self, last: EventId) -> None:
        self.last = last
        self.acknowledged = last

    def take(self, frames: Iterable[Frame], wanted: EventFilter, out: bytearray) -> int:
        """Append the frames newer than ``last`` that pass ``wanted``; return how many."""
        sent = 0
        for frame in frames:
            if frame.id <= self.last:
                continue
            self.last = frame.id
            if wanted.matches(frame.meta):
                out += frame.wire
                self.acknowledged = frame.id
                sent += 1
        return sent

    def catch_up(self, out: bytearray) -> None:
        """Move the client's Last-Event-ID past events skipped since the last one sent."""
        if self.last > self.acknowledged:
            out += id_only_frame(self.last)
            self.acknowledged = self.last


async def event_stream(
    sub: Subscription,
    history: History,
    wanted: EventFilter,
    after: EventId | None,
    options: FeedOptions,
) -> AsyncGenerator[bytes]:
    """The bytes of one feed response: retry hint, history, then live frames and pings.

    It ends when ``sub`` closes: at the end of its lifetime (see ``feed_response``), on
    shutdown or overflow.
    """
    cursor = _Cursor(after if after is not None else sub.start)
    sent = 0
    reason = "disconnected"
    try:
        yield _retry_frame(options.retry_ms)
        if after is not None and after < sub.start:
            replay = _replay(history, sub, wanted, cursor, options.heartbeat_s)
            async with contextlib.aclosing(replay) as chunks:
                async for chunk, count in chunks:
                    sent += count
                    yield chunk
        while True:
            await sub.wait()
            if sub.closed.is_set():
                break
            frames = sub.drain()
            if not frames:
                yield PING  # woken with nothing buffered: a heartbeat is due
                continue
            out = bytearray()
            count = cursor.take(frames, wanted, out)
            cursor.catch_up(out)
            if out:
                sent += count
                metrics.EVENTS_SENT.inc(count)
                yield bytes(out)
        reason = sub.reason
    except (RedisError, OSError, psycopg.Error) as e:
        # The headers are out: end the stream; the client retries and resumes from its id.
        reason = "history-error"
        metrics.REPLAY_ERRORS.inc()
        log.warning("feed history unavailable", error=str(e))
    finally:
        if reason == "disconnected" and sub.closed.is_set():
            reason = sub.reason  # closed by the hub while a write was stuck
        log.info(
            "feed closed",
            admin=options.admin,
            remote=options.remote,
            reason=reason,
            events_sent=sent,
            last_event_id=format_event_id(cursor.acknowledged),
        )


async def _replay(
    history: History,
    sub: Subscription,
    wanted: EventFilter,
    cursor: _Cursor,
    flush_s: float,
) -> AsyncGenerator[tuple[bytes, int]]:
    """History up to the subscription's start, as (chunk, events in it) pairs.

    Frames are coalesced into chunks of up to ``_CHUNK_BYTES``; a chunk also goes out after
    ``flush_s`` so a client whose filter skips most of a long history still hears from us.
    """
    out = bytearray()
    count = 0
    flushed = time.monotonic()
    async with contextlib.aclosing(history.replay(cursor.last, sub.start)) as frames:
        async for frame in frames:
            count += cursor.take((frame,), wanted, out)
            now = time.monotonic()
            if len(out) < _CHUNK_BYTES and now - flushed < flush_s:
                continue
            cursor.catch_up(out)
            metrics.EVENTS_SENT.inc(count)
            yield bytes(out), count
            out.clear()
            count = 0
            flushed = now
            if sub.closed.is_set():  # lifetime, shutdown or overflow
                break
    cursor.catch_up(out)
    if out:
        metrics.EVENTS_SENT.inc(count)
        yield bytes(out), count


class FeedResponse(ASGIStreamingResponse):
    """The ASGI response of ``GET /events``.

    Unlike a plain streaming response, it ends the stream when the subscription is
    closed even while a write is blocked on a client that stopped reading, and it always
    releases the subscription, however the response ends.
    """

    def __init__(self, hub: Hub, sub: Subscription, stream: AsyncGenerator[bytes]) -> None:
        super().__init__(
            iterator=stream,
            media_type="text/event-stream",
            headers=SSE_HEADERS,
            status_code=200,
        )
        self._hub = hub
        self._sub = sub
        self._body = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._hub.unsubscribe(self._sub)

    async def send_body(self, send: Send, receive: Receive) -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._write, send, group.cancel_scope)
                group.start_soon(self._stop_if_stuck, group.cancel_scope)
                group.start_soon(self._stop_on_disconnect, receive, group.cancel_scope)
        finally:
            # The generator may be parked at a yield: close it now, so its history cursor
            # and database connection are returned at once, not at garbage collection.
            with anyio.move_on_after(5, shield=True):
                await self._body.aclose()

    async def _write(self, send: Send, scope: anyio.CancelScope) -> None:
        async for chunk in self._body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        scope.cancel()

    async def _stop_on_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        scope.cancel()

    async def _stop_if_stuck(self, scope: anyio.CancelScope) -> None:
        await self._sub.closed.wait()
        await anyio.sleep(_STUCK_GRACE_S)
        # Still writing: blocked on a client that doesn't read. Abandon the response.
        scope.cancel()


def feed_response(
    hub: Hub,
    history: History,
    wanted: EventFilter,
    after: EventId | None,
    options: FeedOptions,
) -> FeedResponse:
    """Subscribe now (raises ``TooManyClients``) and build the response that streams."""
    # Up to 10% longer, so clients that connected together don't all reconnect together.
    sub = hub.subscribe(options.lifetime_s * random.uniform(1.0, 1.1))
    return FeedResponse(hub, sub, event_stream(sub, history, wanted, after, options))
