"""Fan-out: one reader per process follows the events stream and hands every frame to
every connected feed.

The reader decodes and encodes each event once; subscribers get the same ``Frame`` objects
in a bounded buffer of their own. Pushing never waits: a subscriber whose buffer is full is
closed (its stream ends and the client resumes with Last-Event-ID), so one slow client
never holds up the others or grows memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from typing import cast

import psycopg
import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from fintrack.notify import metrics
from fintrack.notify.frames import (
    EventId,
    Frame,
    format_event_id,
    frames_from_entries,
    parse_event_id,
)

log = structlog.get_logger(__name__)

# Where the live feed starts when the process starts: the newest id ever published.
StartPosition = Callable[[], Awaitable[EventId]]

# Entries per XREAD: well below a client's buffer, so a client that drains its buffer
# between a few reads is never dropped by one burst.
_MAX_READ_COUNT = 500
_BACKOFF_MIN_S = 0.1
_BACKOFF_MAX_S = 5.0
# The hub ticks twice per heartbeat interval; see ``Subscription.tick``.
_TICKS_PER_HEARTBEAT = 2


_XReadReply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


class Subscription:
    """One feed client's view of the hub: a bounded buffer of frames and a close signal.

    Every frame with an id greater than ``start`` reaches the buffer (unless the
    subscription is closed first); older ones are the client's history to replay.

    Waking the client is cheap on purpose: a waiting client parks on one bare future that
    the hub resolves when frames arrive, a heartbeat is due or the subscription closes.
    There is no timer per wait: heartbeats come from the hub's one ticker, the lifetime
    from one timer handle per subscription, set once.
    """

    __slots__ = (
        "_beat",
        "_expiry",
        "_frames",
        "_idle_ticks",
        "_limit",
        "_waiter",
        "closed",
        "reason",
        "start",
    )

    def __init__(self, start: EventId, limit: int) -> None:
        self.start = start
        self._limit = limit
        self._frames: deque[Frame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._beat = False
        self._idle_ticks = 0
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = asyncio.Event()
        self.reason = ""

    def push(self, frames: list[Frame]) -> bool:
        """Buffer ``frames``; False (and nothing buffered) if that would exceed the limit."""
        if len(self._frames) + len(frames) > self._limit:
            return False
        self._frames.extend(frames)
        self._idle_ticks = 0
        self._wake()
        return True

    def tick(self) -> None:
        """One hub tick (half a heartbeat interval) passed: after two without frames, a
        heartbeat is due. So a quiet client hears from us every heartbeat interval, and
        never sooner than half of one after its last frames."""
        self._idle_ticks += 1
        if self._idle_ticks >= _TICKS_PER_HEARTBEAT:
            self._idle_ticks = 0
            self._beat = True
            self._wake()

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.reason = reason
            self.closed.set()
            self._wake()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def expire_after(self, seconds: float, on_expiry: Callable[[Subscription], None]) -> None:
        """Call ``on_expiry(self)`` in ``seconds`` unless the subscription closes first."""
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(loop.time() + seconds, on_expiry, self)

    async def wait(self) -> None:
        """Return once frames are buffered, a heartbeat is due, or the subscription closed."""
        if self._frames or self._beat or self.closed.is_set():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def drain(self) -> list[Frame]:
        """Take the buffered frames (they count as the heartbeat, if one was due)."""
        frames = list(self._frames)
        self._frames.clear()
        self._beat = False
        return frames

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class TooManyClients(Exception):
    """The process serves its maximum number of feed clients, or is shutting down."""


class Hub:
    """The events-stream reader and its subscribers. ``start`` once, ``stop`` at shutdown."""

    def __init__(
        self,
        redis: Redis,
        stream: str,
        start_position: StartPosition,
        *,
        max_clients: int,
        client_buffer: int,
        block_ms: int = 2_000,
        heartbeat_s: float = 15.0,
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._start_position = start_position
        self._max_clients = max_clients
        self._client_buffer = client_buffer
        self._block_ms = block_ms
        self._tick_s = heartbeat_s / _TICKS_PER_HEARTBEAT
        self._read_count = max(1, min(_MAX_READ_COUNT, client_buffer // 4))
        self._subscribers: set[Subscription] = set()
        self._position: EventId | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._draining = False

    @property
    def position(self) -> EventId | None:
        """The id of the newest event handed to subscribers (None until the reader starts)."""
        return self._position

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    @property
    def running(self) -> bool:
        """The reader follows the stream (it knows its position and has not died)."""
        return self._position is not None and self._task is not None and not self._task.done()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notify-hub-reader")
        self._task.add_done_callback(_reader_stopped)
        self._ticker = asyncio.create_task(self._tick(), name="notify-hub-ticker")

    def drain(self) -> None:
        """Shutting down: end every feed (clients reconnect elsewhere) and refuse new ones."""
        self._draining = True
        for sub in list(self._subscribers):
            sub.close("shutdown")

    async def stop(self) -> None:
        """Close every subscription (their streams end cleanly), then stop the reader."""
        self.drain()
        for task in (self._task, self._ticker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._ticker = None

    async def wait_ready(self, seconds: float) -> bool:
        """True once the reader knows where the stream stands (False after ``seconds``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._ready.wait()
        return self._ready.is_set()

    def subscribe(self, lifetime_s: float | None = None) -> Subscription:
        """A new subscription starting at the current position, closed with reason
        ``lifetime`` after ``lifetime_s`` seconds (if given).

        Synchronous on purpose: no frame can be dispatched between reading the position and
        joining the subscribers, so the client's history ends exactly where its live feed
        begins. Raises ``TooManyClients`` at the limit; call only after ``wait_ready``.
        """
        if self._position is None:
            raise RuntimeError("subscribe() before the hub is ready")
        if self._draining or len(self._subscribers) >= self._max_clients:
            metrics.CLIENTS_REJECTED.inc()
            raise TooManyClients
        sub = Subscription(self._position, self._client_buffer)
        if lifetime_s is not None:
            sub.expire_after(lifetime_s, self._expire)
        self._subscribers.add(sub)
        metrics.CLIENTS.set(len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close("gone")
        self._subscribers.discard(sub)
        metrics.CLIENTS.set(len(self._subscribers))

    def _expire(self, sub: Subscription) -> None:
        # Out of the fan-out at once: a closed feed must not fill up and count as overflow.
        self._subscribers.discard(sub)
        sub.close("lifetime")
        metrics.CLIENTS.set(len(self._subscribers))

    async def _tick(self) -> None:
        # One timer for every client's heartbeat, instead of a timeout per client per wait.
        while True:
            await asyncio.sleep(self._tick_s)
            for sub in self._subscribers:
                sub.tick()

    def _dispatch(self, frames: list[Frame], position: EventId) -> None:
        self._position = position
        if not frames:
            return
        for sub in list(self._subscribers):
            if not sub.push(frames):
                self._subscribers.discard(sub)
                sub.close("overflow")
                metrics.CLIENTS_DROPPED.labels(reason="overflow").inc()
        metrics.CLIENTS.set(len(self._subscribers))

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN_S
        while True:
            try:
                if self._position is None:
                    self._position = await self._start_position()
                    self._ready.set()
                    log.info("event feed reader started", position=format_event_id(self._position))
                reply = cast(
                    _XReadReply,
                    await self._redis.xread(
                        {self._stream: format_event_id(self._position)},
                        count=self._read_count,
                        block=self._block_ms,
                    ),
                )
            except (RedisError, OSError, psycopg.Error) as e:
                # Never hot-loop on a dead server; resume from the same position after it.
                metrics.READER_ERRORS.inc()
                delay = backoff * random.uniform(0.5, 1.0)
                log.warning("event feed read failed", error=str(e), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                continue
            backoff = _BACKOFF_MIN_S
            for _stream, entries in reply:
                if entries:
                    # Unreadable entries are skipped, but the position moves past them too.
                    self._dispatch(frames_from_entries(entries), parse_event_id(entries[-1][0]))


def _reader_stopped(task: asyncio.Task[None]) -> None:
    # The reader only ends by cancellation; anything else is a bug that stalls every feed,
    # so make it loud (and /ready reports it).
    if not task.cancelled() and task.exception() is not None:
        log.error("event feed reader died", exc_info=task.exception())


async def stream_last_id(redis: Redis, stream: str) -> EventId | None:
    """The newest id ever added to ``stream`` (kept by Redis across trims); None if the
    stream doesn't exist."""
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError as e:
        if "no such key" in str(e).lower():
            return None
        raise
    return parse_event_id(info["last-generated-id"])
