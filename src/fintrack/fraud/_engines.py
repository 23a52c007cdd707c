"""The engine in force: rebuilt when the rules file or the managed blocklist changes."""

from __future__ import annotations

import time
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool

from fintrack.config import Settings
from fintrack.core import blocklist
from fintrack.fraud.engine import Engine
from fintrack.fraud.settings import RuleSettingsWatcher

logger = structlog.get_logger(__name__)

RULES_CHECK_S = 2.0  # how often the rules file is checked for changes


class EngineKeeper:
    """Holds the ``Engine`` built from the rule settings (file, hot-reloaded) and the
    blocklist (PostgreSQL, reloaded when its version in Redis moves). The TOML's own
    networks stay in the engine only; they are never copied into PostgreSQL."""

    __slots__ = ("_blocklist", "_rules_due", "_watcher", "engine", "version")

    def __init__(self, settings: Settings) -> None:
        """Load the rule settings; raises ``RuleSettingsError`` if the file is invalid."""
        self._watcher = RuleSettingsWatcher(settings.rules_file or None)
        self._blocklist: list[str] = []
        self._rules_due = time.monotonic() + RULES_CHECK_S
        self.version: int | None = None  # of the blocklist loaded; None: not loaded yet
        self.engine = Engine(self._watcher.current())

    def maybe_reload_rules(self) -> None:
        """Check the rules file (at most every ``RULES_CHECK_S``); rebuild on a change."""
        now = time.monotonic()
        if now < self._rules_due:
            return
        self._rules_due = now + RULES_CHECK_S
        if self._watcher.reload_if_changed():
            self._rebuild()

    async def sync_blocklist(self, pool: AsyncConnectionPool[Any], version: int) -> None:
        """Reload the blocklist if ``version`` (read from Redis) differs from the loaded one.

        Reading the version before the list means a change racing with the load is seen
        at the latest by the next batch."""
        if version == self.version:
            return
        entries = await blocklist.load(pool)
        self._blocklist = [e.network for e in entries]
        self.version = version
        self._rebuild()
        logger.info("blocklist loaded", version=version, networks=len(self._blocklist))

    def _rebuild(self) -> None:
        self.engine = Engine(self._watcher.current(), self._blocklist)
