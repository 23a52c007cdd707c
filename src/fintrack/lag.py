"""Consumer-group lag of the transactions stream, for scaling workers on backlog.

``fintrack lag`` prints one JSON line per reading. With a CloudWatch namespace it prints
the line in CloudWatch Embedded Metric Format instead: the awslogs driver ships stdout to
CloudWatch Logs, which extracts the metric from it, so no AWS SDK or API call is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from fintrack.config import Settings
from fintrack.core.streams import TXN_GROUP, redis_client

# When Redis cannot tell the lag (XDEL left a tombstone after the group's position) we count
# the undelivered entries ourselves, up to this many: past it, scaling is saturated anyway.
COUNT_CAP = 10_000


@dataclass(frozen=True, slots=True)
class GroupLag:
    """Entries not yet delivered to ``group`` (``lag``) and delivered but unacked (``pending``)."""

    stream: str
    group: str
    lag: int
    pending: int

    def to_json(self) -> str:
        return json.dumps(
            {"stream": self.stream, "group": self.group, "lag": self.lag, "pending": self.pending}
        )

    def to_emf(self, namespace: str, *, timestamp_ms: int | None = None) -> str:
        """One CloudWatch Embedded Metric Format line: metrics ``StreamLag`` and
        ``PendingEntries`` in ``namespace``, dimensions ``Stream`` and ``Group``."""
        ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        return json.dumps(
            {
                "_aws": {
                    "Timestamp": ts,
                    "CloudWatchMetrics": [
                        {
                            "Namespace": namespace,
                            "Dimensions": [["Stream", "Group"]],
                            "Metrics": [
                                {"Name": "StreamLag", "Unit": "Count"},
                                {"Name": "PendingEntries", "Unit": "Count"},
                            ],
                        }
                    ],
                },
                "Stream": self.stream,
                "Group": self.group,
                "StreamLag": self.lag,
                "PendingEntries": self.pending,
            }
        )


async def read_lag(redis: Redis, stream: str, group: str = TXN_GROUP) -> GroupLag:
    """The group's lag and pending count from ``XINFO GROUPS``.

    No stream yet: nothing waits (0, 0). A stream but no group yet (no worker has started):
    every entry waits, since workers create the group at the stream's start.
    """
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError as e:
        if "no such key" not in str(e):
            raise
        return GroupLag(stream, group, 0, 0)
    for info in groups:
        if _text(info["name"]) != group:
            continue
        lag = info.get("lag")
        if lag is None:
            last = _text(info["last-delivered-id"])
            undelivered = await redis.xrange(stream, min=f"({last}", count=COUNT_CAP)
            lag = len(undelivered or ())
        return GroupLag(stream, group, int(lag), int(info["pending"]))
    return GroupLag(stream, group, int(await redis.xlen(stream)), 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def publish(
    settings: Settings,
    *,
    watch_s: float | None,
    namespace: str | None,
    emit: Callable[[str], None],
    warn: Callable[[str], None],
) -> int:
    """Read the lag once (``watch_s`` None) or every ``watch_s`` seconds until SIGTERM or
    SIGINT; hand each line to ``emit``. Returns the exit code.

    Once: a Redis error fails (exit 1). Watching: it is reported through ``warn`` and the
    next tick tries again, so a Redis failover does not kill the metric publisher.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    redis = redis_client(settings)
    try:
        while True:
            try:
                reading = await read_lag(redis, settings.txn_stream)
            except RedisError as e:
                warn(f"cannot read lag of {settings.txn_stream}: {type(e).__name__}: {e}")
                failed = True
            else:
                emit(reading.to_emf(namespace) if namespace else reading.to_json())
                failed = False
            if watch_s is None:
                return 1 if failed else 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=watch_s)
            if stop.is_set():
                return 0
    finally:
        await redis.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(settings: Settings, *, watch_s: float | None, namespace: str | None) -> int:
    """Blocking entry point for the CLI; lines go to stdout, problems to stderr."""

    def emit(line: str) -> None:
        print(line, flush=True)

    def warn(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return asyncio.run(
        publish(settings, watch_s=watch_s, namespace=namespace, emit=emit, warn=warn)
    )
