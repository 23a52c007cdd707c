"""Redis connections and the stream plumbing every role shares."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ResponseError

from fintrack.config import Settings

TXN_GROUP = "fraud-workers"  # the consumer group of every worker on the txns stream
ARCHIVE_GROUP = "archivers"  # copies published events into PostgreSQL


def redis_client(settings: Settings, *, block_ms: int = 0, retries: int = 3) -> Redis:
    """A client for ``settings.redis_url``.

    ``block_ms`` is the longest blocking read the caller makes: the socket timeout must
    exceed it, or a quiet stream looks like a dead server. Retries use the asyncio Retry
    class; the sync one silently disables them.
    """
    settings.require("redis_url")
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=5.0 + block_ms / 1000,
        socket_connect_timeout=2.0,
        health_check_interval=30,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries),
    )


async def ensure_group(redis: Redis, stream: str, group: str, start_id: str = "0") -> bool:
    """Create ``group`` on ``stream`` (and the stream) unless it exists; True if created."""
    try:
        await redis.xgroup_create(stream, group, id=start_id, mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
        return False
    return True


def is_nogroup(error: ResponseError) -> bool:
    """The stream or its group vanished (e.g. Redis restarted without persistence)."""
    return str(error).startswith("NOGROUP")
