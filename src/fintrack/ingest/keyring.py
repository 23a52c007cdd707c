"""The api's cached set of valid API keys: ``FINTRACK_API_KEYS`` plus the issued ones.

Checking a key must not cost a round trip, so each process keeps {digest: client} in
memory and reloads the issued keys from PostgreSQL when the version counter in Redis
moves (see ``fintrack.core.apikeys``). It looks at the counter

- every ``key_refresh_s`` (so a revoked key stops working within that time everywhere),
- when a presented key is unknown (so a key issued on another replica works at once),

and reloads everything every ``_FULL_RELOAD_S`` whatever the counter says, in case a
writer could not reach Redis to bump it. Until PostgreSQL has answered once, only the
configured keys are known.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import Any, Final

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from redis.exceptions import RedisError

from fintrack.config import Settings
from fintrack.core import apikeys
from fintrack.core.auth import identify

log = structlog.get_logger(__name__)

_FULL_RELOAD_S: Final = 30.0
_LOAD_TIMEOUT_S: Final = 2.0


class KeyRing:
    """Which client a presented API key belongs to, from an in-memory copy."""

    __slots__ = (
        "_configured",
        "_digests",
        "_loaded_at",
        "_pool",
        "_redis",
        "_refreshing",
        "_settings",
        "_task",
        "_version",
    )

    def __init__(self, settings: Settings, pool: AsyncConnectionPool[Any], redis: Redis) -> None:
        self._settings = settings
        self._pool = pool
        self._redis = redis
        self._configured: Mapping[str, str] = dict(settings.api_key_hashes)
        self._digests: Mapping[str, str] = self._configured
        self._version: int | None = None  # of the issued keys loaded; None: none loaded yet
        self._loaded_at = float("-inf")
        self._refreshing: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def digests(self) -> Mapping[str, str]:
        """{sha256 digest: client} of every key valid right now, as far as we know."""
        return self._digests

    async def start(self) -> None:
        """Load the issued keys (best effort, briefly), then keep watching the version."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_LOAD_TIMEOUT_S):
                await self.refresh()
        self._task = asyncio.create_task(self._watch(), name="api-key-watch")

    async def stop(self) -> None:
        for task in (self._task, self._refreshing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._refreshing = None

    async def identify(self, secret: str | None) -> str | None:
        """The client whose key ``secret`` is, or None. An unknown key triggers one check
        of the version counter (shared by concurrent callers) before it is refused."""
        name = identify(secret, self._digests)
        if name is None and secret:
            await self.refresh()
            name = identify(secret, self._digests)
        return name

    async def refresh(self, *, force: bool = False) -> None:
        """Reload the issued keys if the version moved (or ``force``); one reload at a time,
        concurrent callers wait for the one in flight."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh(force))
        await asyncio.shield(self._refreshing)

    async def _refresh(self, force: bool) -> None:
        try:
            version: int | None = await apikeys.current_version(self._redis, self._settings)
        except (RedisError, OSError) as e:
            log.warning("api key version unreadable", error=repr(e))
            version = None
        stale = time.monotonic() - self._loaded_at >= _FULL_RELOAD_S
        if not force and not stale and version is not None and version == self._version:
            return
        try:
            issued = await apikeys.active_digests(self._pool)
        except psycopg.Error as e:
            log.warning("api keys not reloaded: PostgreSQL unavailable", error=repr(e))
            return
        # Configured keys win a clash: they can't be revoked here anyway.
        self._digests = {**issued, **self._configured}
        self._version = version if version is not None else self._version
        self._loaded_at = time.monotonic()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._settings.key_refresh_s)
            try:
                await self.refresh()
            except Exception as e:  # a bug here must not end revocation checks for good
                log.error("api key refresh failed", exc_info=e)
