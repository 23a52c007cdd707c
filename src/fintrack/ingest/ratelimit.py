"""Per-API-client rate limits, shared by every api replica through Redis.

Each client has a token bucket in one Redis hash ``{prefix}:rate:{client}``: it holds
``FINTRACK_RATE_LIMIT`` tokens, refills that many per ``FINTRACK_RATE_WINDOW_S``, and each
request (each transaction of a batch) takes one. So a client may send the whole limit at
once, then one more every window/limit seconds; request N+1 of a burst is refused with 429
and ``Retry-After``. Time is Redis's ``TIME``, the same for every replica.

Counting is exact: tokens are kept in units of 1/window-in-ms of a token (integers far
below 2^53, exact in Lua's doubles), so rounding can never let request N+1 through.

Cost: submissions are counted inside the hand-off script (``BUCKET_LUA`` is spliced into
it), so the limit adds no round trip to the hot path. Reads are counted by ``RateGate``,
one EVALSHA next to the PostgreSQL query they make anyway; if Redis is down, reads are
let through (logged) rather than refused, since PostgreSQL can still answer them.
"""

from __future__ import annotations

import hashlib
import math
from typing import Final

import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from fintrack.config import Settings
from fintrack.core.errors import FinTrackError

log = structlog.get_logger(__name__)

# bucket(key, limit, window_ms) → (tokens left after taking one, now) or (-ms to wait, now).
# spend(...) stores the bucket; a bucket left alone for a window is full, hence the expiry.
BUCKET_LUA: Final = """
local function bucket(key, limit, window)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local cap = limit * window
  local s = redis.call('HMGET', key, 't', 'at')
  local tokens, at = tonumber(s[1]), tonumber(s[2])
  if not tokens or not at then tokens, at = cap, now end
  if now > at then tokens = math.min(cap, tokens + (now - at) * limit) end
  if tokens < window then return -math.ceil((window - tokens) / limit), now end
  return tokens - window, math.max(now, at)
end
local function spend(key, left, now, window)
  redis.call('HSET', key, 't', string.format('%.0f', left), 'at', string.format('%.0f', now))
  redis.call('PEXPIRE', key, window)
end
"""

# KEYS: the bucket. ARGV: limit, window (ms). Returns 0 (allowed) or the ms to wait.
_TAKE: Final = (
    BUCKET_LUA
    + """
local left, now = bucket(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))
if left < 0 then return string.format('%.0f', -left) end
spend(KEYS[1], left, now, tonumber(ARGV[2]))
return 0
"""
)
_TAKE_SHA: Final = hashlib.sha1(_TAKE.encode()).hexdigest()  # noqa: S324 -- Redis names scripts by SHA-1


class RateLimited(FinTrackError):
    """The client used up its request budget; it may retry after ``retry_after_ms``."""

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"rate limit exceeded; retry in {math.ceil(retry_after_ms / 1000)} s")
        self.retry_after_ms = retry_after_ms

    @property
    def retry_after_s(self) -> str:
        """The ``Retry-After`` header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after_ms / 1000)))


def bucket_key(settings: Settings, client: str) -> str:
    return f"{settings.key_prefix}:rate:{client}"


class RateGate:
    """Takes one token from a client's bucket for requests that don't hand off (reads)."""

    __slots__ = ("_redis", "_settings")

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings

    @property
    def enabled(self) -> bool:
        return self._settings.rate_limit > 0

    async def take(self, client: str) -> None:
        """Count one request of ``client``; raise ``RateLimited`` if over its limit."""
        if not self.enabled:
            return
        s = self._settings
        args = (1, bucket_key(s, client), s.rate_limit, s.rate_window_ms)
        try:
            try:
                wait = await self._redis.evalsha(_TAKE_SHA, *args)
            except NoScriptError:
                wait = await self._redis.eval(_TAKE, *args)
        except (RedisError, OSError) as e:
            log.warning("rate limit not checked: Redis unavailable", error=repr(e))
            return
        if int(wait) > 0:
            raise RateLimited(int(wait))
