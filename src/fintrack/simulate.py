"""``fintrack simulate``: realistic, seeded traffic against a running api.

A run: check the api answers; make sure the blocked networks the ``blocklisted_ip`` pattern
uses are on the blocklist (``POST /admin/blocklist``; by default the documentation ranges
203.0.113.0/24 and 2001:db8:bad::/48); send the generated transactions open-loop at the
target rate; wait (bounded) until every accepted one is decided; summarise.

The generator (``generate``) is pure and seeded; everything that does I/O lives in
``_simulate_sender``. This module depends on ``config`` and ``core`` only, like any client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import httpx
import msgspec
from rich.console import Console
from rich.progress import Progress, TaskID

from fintrack._simulate_sender import await_decisions, send_open_loop
from fintrack._simulate_summary import PatternSummary, Summary, render_text, summarize
from fintrack._simulate_traffic import (
    DEFAULT_BLOCKED_NETWORKS,
    FRAUD_PATTERNS,
    PATTERNS,
    Pattern,
    SimulatedTxn,
    TrafficProfile,
    generate,
)
from fintrack.core.errors import FinTrackError

__all__ = [
    "DEFAULT_BLOCKED_NETWORKS",
    "FRAUD_PATTERNS",
    "PATTERNS",
    "Pattern",
    "PatternSummary",
    "SimulatedTxn",
    "SimulationError",
    "SimulationOptions",
    "Summary",
    "TrafficProfile",
    "generate",
    "render_text",
    "run_simulation",
    "total_transactions",
]

DEFAULT_DURATION_S = 10.0
_USER_AGENT = "fintrack-simulate"


class SimulationError(FinTrackError):
    """The simulation cannot run at all (the api does not answer)."""


class SimulationOptions(msgspec.Struct, frozen=True, kw_only=True):
    """One run: where to send, how much, how fast, and how long to wait for decisions."""

    url: str
    total: int
    rate: float
    seed: int
    profile: TrafficProfile = TrafficProfile()
    api_key: str | None = None
    admin_token: str | None = None
    concurrency: int = 32
    settle_s: float = 10.0
    progress: bool = False  # a rich progress bar on stderr

    def __post_init__(self) -> None:
        if self.total < 0:
            raise ValueError("total: must not be negative")
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError("rate: must be a positive number")
        if self.concurrency < 1:
            raise ValueError("concurrency: must be at least 1")

    def __repr__(self) -> str:
        # Secrets never reach a log line or a traceback.
        return f"SimulationOptions(url={self.url!r}, total={self.total}, rate={self.rate})"


def total_transactions(rate: float, duration_s: float | None, count: int | None) -> int:
    """How many to send: ``count``, or ``rate × duration``, the smaller if both are given;
    ``rate × 10 s`` if neither is."""
    if count is None and duration_s is None:
        duration_s = DEFAULT_DURATION_S
    by_duration = None if duration_s is None else math.ceil(rate * duration_s)
    candidates = [n for n in (count, by_duration) if n is not None]
    return min(candidates)


async def run_simulation(
    options: SimulationOptions, warn: Callable[[str], None] = lambda _: None
) -> Summary:
    """Run the simulation described by ``options``; ``warn`` hears about problems that do
    not stop the run (they are also listed in the summary).

    Raises ``SimulationError`` if the api cannot be reached at all.
    """
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        warn(message)

    headers = {"content-type": "application/json"}
    if options.api_key:
        headers["authorization"] = f"Bearer {options.api_key}"
    limits = httpx.Limits(
        max_connections=options.concurrency, max_keepalive_connections=options.concurrency
    )
    # No pool timeout: a request waiting for a free connection is the open-loop queue.
    timeout = httpx.Timeout(10.0, pool=None)
    async with httpx.AsyncClient(
        base_url=options.url, limits=limits, timeout=timeout,
        headers={"user-agent": _USER_AGENT},
    ) as client:  # fmt: skip
        await _check_reachable(client, options.url)
        await _ensure_blocked(client, options, note)
        # The export's `since` compares with the api's clock: allow for some skew.
        since = datetime.now(UTC) - timedelta(minutes=2)
        with _Progress(options.progress) as progress:
            progress.start("sending", options.total)
            result = await send_open_loop(
                client,
                generate(options.profile, options.seed),
                total=options.total,
                rate=options.rate,
                headers=headers,
                max_in_flight=options.concurrency * 64,
                on_sent=lambda: progress.advance(1),
            )
            accepted = [
                txn.txn_id
                for txn, outcome in zip(result.txns, result.outcomes, strict=True)
                if outcome.status_code in (200, 202)
            ]
            progress.start("awaiting decisions", len(accepted))
            settle_start = time.monotonic()
            statuses = await await_decisions(
                client,
                accepted,
                since=since,
                timeout_s=options.settle_s,
                headers=headers,
                concurrency=options.concurrency,
                on_decided=progress.advance,
            )
            settled_in = time.monotonic() - settle_start
    return summarize(
        url=options.url,
        seed=options.seed,
        rate=options.rate,
        result=result,
        statuses=statuses,
        settle_s=settled_in,
        warnings=warnings,
    )


async def _check_reachable(client: httpx.AsyncClient, url: str) -> None:
    try:
        await client.get("/health")
    except httpx.HTTPError as e:
        raise SimulationError(f"cannot reach the api at {url}: {e or type(e).__name__}") from e


async def _ensure_blocked(
    client: httpx.AsyncClient, options: SimulationOptions, note: Callable[[str], None]
) -> None:
    """Put the pattern's networks on the blocklist; a failure is a warning, not an error
    (the networks may already be blocked by an operator)."""
    headers = {}
    if options.admin_token:
        headers["authorization"] = f"Bearer {options.admin_token}"
    for network in options.profile.blocked_networks:
        body = {"network": network, "reason": "fintrack simulate: documentation range"}
        try:
            response = await client.post("/admin/blocklist", json=body, headers=headers)
        except httpx.HTTPError as e:
            note(f"could not add {network} to the blocklist: {type(e).__name__}")
            continue
        if response.is_success or response.status_code == 409:
            continue
        hint = (
            " (pass --admin-token or set FINTRACK_SIMULATE_ADMIN_TOKEN)"
            if response.status_code in (401, 403)
            else ""
        )
        note(
            f"could not add {network} to the blocklist: HTTP {response.status_code}{hint}; "
            f"blocklisted_ip transactions go uncaught unless it is blocked "
            f"(`fintrack blocklist add {network}`)"
        )


class _Progress:
    """A rich progress bar on stderr, or nothing at all when disabled."""

    def __init__(self, enabled: bool) -> None:
        self._bar = Progress(console=Console(stderr=True)) if enabled else None
        self._task: TaskID | None = None

    def __enter__(self) -> Self:
        if self._bar is not None:
            self._bar.start()
        return self

    def start(self, what: str, total: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task(what, total=total)

    def advance(self, n: int) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task, n)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        if self._bar is not None:
            self._bar.stop()
