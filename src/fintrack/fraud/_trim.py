"""Stream trimming that keeps the newest ``retention`` entries and never drops an
unacknowledged one.

Redis 7.0 can trim by length (MAXLEN) or by id (MINID) but not "by length, yet not past
the consumer groups" (``XADD ... ACKED`` is Redis 8.2+). So the trimmer turns the length
target into an id: each tick it samples the stream's ``entries-added`` counter and last
id; the newest sample at least ``retention`` entries old gives an id below which entries
may go. The Lua script then lowers that id to every group's oldest pending and
last-delivered id. Samples live in memory only: a new worker simply trims later.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from fintrack.fraud._scripts import Scripts

MAX_SAMPLES = 10_000  # at one sample every few seconds: well over a day of history


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Trimmer:
    """Trims one stream at most every ``interval_s`` seconds (see the module docstring)."""

    __slots__ = ("_due", "_interval_s", "_redis", "_retention", "_samples", "_scripts", "stream")

    def __init__(
        self, redis: Redis, scripts: Scripts, stream: str, *, retention: int, interval_s: float
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self.stream = stream
        self._retention = retention
        self._interval_s = interval_s
        self._samples: deque[tuple[int, str]] = deque(maxlen=MAX_SAMPLES)
        self._due = 0.0

    async def maybe_trim(self) -> int:
        """Trim if a tick is due; returns the number of entries removed."""
        now = time.monotonic()
        if now < self._due:
            return 0
        self._due = now + self._interval_s
        try:
            info = await self._redis.xinfo_stream(self.stream)
        except ResponseError as e:
            if "no such key" not in str(e):
                raise
            return 0  # the stream is gone (Redis lost its data); the worker recreates it
        added = int(info["entries-added"])
        self._samples.append((added, _text(info["last-generated-id"])))
        if int(info["length"]) <= self._retention:
            return 0
        target = added - self._retention
        chosen: tuple[int, str] | None = None
        while self._samples and self._samples[0][0] <= target:
            chosen = self._samples.popleft()
        if chosen is None:
            return 0
        # Keep the chosen sample: it stays the best candidate until a newer one qualifies.
        self._samples.appendleft(chosen)
        return await self._scripts.trim(stream=self.stream, min_id=chosen[1])
