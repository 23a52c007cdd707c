"""The fraud worker: reads the transactions stream, decides, commits, publishes.

Lifecycle: ``start`` (clients, pool, rule settings) → ``loop`` → ``stop``. One loop
iteration: heartbeat, rule-settings check, janitor and trim when due, then one blocking
XREADGROUP; the batch it returns is handed to a task, so with a backlog up to
``PIPELINE_DEPTH`` batches are in hand at once (caught up, the next read waits only until
the batch in hand is committed: its publish overlaps that read). The events archive
(``fraud.archive``) runs as a task of its own.
A batch (``fraud._batch``) takes four round trips whatever its size:

1. decode: an entry whose payload is not a valid transaction is poison;
2. facts: one read-only script returns the blocklist version and each user's activity
   ledger (a pipeline of ZRANGEBYSCOREs does the same, at several times the client CPU),
   capped for very busy users, whose window counts then take one more round trip; for
   users with a long ledger the worker holds from earlier batches, only what was added
   since (``fraud._history``);
3. decide: the pure engine over the whole batch;
4. commit all decisions to PostgreSQL with COPY (a redelivered batch, which COPY refuses,
   with one statement idempotent on ``txn_id``: ``fraud.store``), then
   one Lua script per batch publishes each entry's events and acknowledges it, but only
   while the entry is still pending for this consumer.

Guarantees:

- At-least-once delivery, exactly-once effect. An entry is acked only after its decision
  is committed. A redelivered transaction whose row exists publishes the *stored* decision,
  and publish + ack are one atomic step guarded by ownership, so each decision's events are
  published exactly once even when another worker reclaimed the entry meanwhile.
- Velocity figures never drift. The api records every accepted transaction in the user's
  activity ledger atomically with the enqueue, scored by its stream position; the worker
  only reads the ledger, windows ending at the transaction's own position. The figures for
  a transaction are therefore the same whichever worker decides it, however late, however
  often: a redelivery can't count anything twice.
- Failures. An entry that fails (poison payload, a rule raising, a row PostgreSQL refuses)
  stays pending, the rest of the batch goes on; the janitor reclaims it (XAUTOCLAIM, which
  counts a delivery) after ``worker_claim_idle_ms``. At ``worker_max_attempts`` deliveries it
  goes to the dead-letter stream with its error, its transaction (if decodable) is stored
  as FAILED, a FAILED decision and alert are published, and it is acked.
  Outages (Redis or PostgreSQL unreachable) are not failures: the batch in hand is retried
  with capped exponential backoff, never acked or dead-lettered meanwhile, and kept from
  being reclaimed (its idle time is reset without counting a delivery).
- Shutdown. SIGTERM/SIGINT stop reading; the batches in hand are finished, committed and
  acked; resources close in ``finally``; exit code 0 within ``STOP_GRACE_S``.
- Janitor, every few seconds: XAUTOCLAIM of entries idle longer than the claim period
  (cursor followed to 0-0), on both groups; consumers idle an hour with nothing pending
  are deleted. Trimming (``fraud._trim``) never removes an entry a group still needs.

Test-only hook: ``FINTRACK_FAULT_CRASH_AFTER_COMMIT=N`` (read once by ``run``, not part of
``Settings``) makes the process ``os._exit(137)`` right after its N-th successful commit,
before publishing and acking, to exercise redelivery of committed transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fintrack.config import Settings, SettingsError
from fintrack.core import blocklist
from fintrack.core.db import open_pool
from fintrack.core.heap import settle_after_startup
from fintrack.core.streams import TXN_GROUP, ensure_group, is_nogroup, redis_client
from fintrack.fraud._batch import BatchProcessor, BatchStats
from fintrack.fraud._engines import EngineKeeper
from fintrack.fraud._entries import StreamEntry, parse_entries, parse_read, read_reply
from fintrack.fraud._scripts import Scripts
from fintrack.fraud._trim import Trimmer
from fintrack.fraud.archive import READ_COUNT, Archiver
from fintrack.fraud.settings import RuleSettingsError
from fintrack.fraud.store import PG_OUTAGE_ERRORS

logger = structlog.get_logger(__name__)

PIPELINE_DEPTH = 3  # batches in hand at once with a backlog: one deciding, two waiting
STOP_GRACE_S = 10.0  # SIGTERM → exit, at most (the ECS stopTimeout must be larger)
TRIM_INTERVAL_S = 1.0  # cheap: XINFO and a short script per stream
IDLE_CONSUMER_MS = 3_600_000  # consumers unseen this long with nothing pending are deleted
CONSUMER_SWEEP_S = 300.0
BACKOFF_START_S = 0.05
BACKOFF_CAP_S = 2.0
OUTAGE_LOG_S = 5.0  # while a dependency stays down, one warning per this many seconds
# Once the archive has caught up it waits this long for events to gather: one PostgreSQL
# commit per interval instead of one per handful of events, which at moderate rates took
# commits (and CPU) from the decisions. The live feed reads Redis, and resumes read the
# newest events from Redis too, so only how fresh the history table is depends on it.
ARCHIVE_LINGER_S = 0.1
FAULT_CRASH_ENV = "FINTRACK_FAULT_CRASH_AFTER_COMMIT"

# "A dependency can't serve us right now": back off and retry, never count as a failure.
# (Redis read-only during a failover, or out of memory, is that too.)
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
    *PG_OUTAGE_ERRORS,
)


class _Resources:
    """What ``Worker.start`` opens and ``Worker.stop`` closes."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool[Any]) -> None:
        self.redis = redis_client(settings)
        # Blocking reads get their own connections, with a socket timeout above the block.
        self.reader = redis_client(settings, block_ms=settings.worker_block_ms)
        self.events_reader = redis_client(settings, block_ms=settings.worker_block_ms)
        for client in (self.redis, self.reader, self.events_reader):
            client.set_response_callback("XREADGROUP", read_reply)
        self.pool = pool
        self.scripts = Scripts(self.redis)

    async def close(self) -> None:
        await self.pool.close()
        await self.reader.aclose()
        await self.events_reader.aclose()
        await self.redis.aclose()


class Worker:
    """One fraud worker process (see the module docstring).

    ``drain``: process this consumer's pending entries and everything in the stream, then
    return from ``loop`` as soon as a read comes back empty.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: str,
        drain: bool = False,
        crash_after_commits: int | None = None,
    ) -> None:
        self.settings = settings
        self.consumer = consumer
        self.drain = drain
        self.stopping = asyncio.Event()
        self._done = asyncio.Event()  # the read loop has ended: the archive task ends too
        self.left_pending = 0  # after a drain: entries still pending for this consumer
        self._crash_after = crash_after_commits
        self._stop_deadline = float("inf")
        self._backoff = BACKOFF_START_S
        self._outage_since: float | None = None
        self._outage_logged = 0.0
        self._heartbeat = (
            Path(settings.worker_heartbeat_file) if settings.worker_heartbeat_file else None
        )
        # Reclaim often enough that a failing entry is retried about once a claim period.
        self._janitor_interval = min(5.0, max(0.2, settings.worker_claim_idle_ms / 2000))
        self._janitor_due = 0.0
        self._sweep_due = 0.0
        self._res: _Resources | None = None
        self._engines: EngineKeeper | None = None
        self._batches: BatchProcessor | None = None
        self._archiver: Archiver | None = None
        self._trimmers: list[Trimmer] = []

    # ---- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the rule settings (``RuleSettingsError`` if the file is bad), create the
        Redis clients and the PostgreSQL pool. No waiting on the network: ``loop`` does."""
        s = self.settings
        self._engines = EngineKeeper(s)
        # Autocommit, unchecked: a batch's commit is one statement or an explicit
        # transaction, and a failed one is retried whole (an outage), so the round trips
        # of BEGIN/COMMIT and of a check per batch would only add latency.
        pool = await open_pool(s, min_size=1, max_size=4, autocommit=True, check=False)
        res = self._res = _Resources(s, pool)
        self._batches = BatchProcessor(
            s,
            consumer=self.consumer,
            redis=res.redis,
            pool=res.pool,
            scripts=res.scripts,
            engines=self._engines,
            crash_after_commits=self._crash_after,
        )
        self._archiver = Archiver(
            res.redis, res.pool, s, consumer=self.consumer, scripts=res.scripts
        )
        self._trimmers = [
            Trimmer(
                res.redis,
                res.scripts,
                stream,
                retention=s.stream_retention,
                interval_s=TRIM_INTERVAL_S,
            )
            for stream in (s.txn_stream, s.event_stream)
        ]

    async def stop(self) -> None:
        """Close what ``start`` opened (safe after a partial start)."""
        if self._res is not None:
            await self._res.close()
            self._res = None
        logger.info("worker stopped", consumer=self.consumer)

    def request_stop(self) -> None:
        """Stop reading; finish the batches in hand (bounded by ``STOP_GRACE_S``)."""
        if not self.stopping.is_set():
            logger.info("worker stopping", consumer=self.consumer)
            self._stop_deadline = time.monotonic() + STOP_GRACE_S - 1.0
            self.stopping.set()

    async def loop(self) -> None:
        """Run until asked to stop (or, with ``drain``, until the stream is empty).

        With a backlog up to ``PIPELINE_DEPTH`` batches are in hand at once: while one
        waits on PostgreSQL or Redis the next is decoded and decided. Caught up, the next
        read waits until the batch in hand is committed (and lingers), then takes
        everything that arrived meanwhile while that batch publishes. Their order does not
        matter (velocity figures come from the ledger, not from processing order, and each
        event is published on its own)."""
        assert self._engines is not None
        logger.info("worker started", consumer=self.consumer, drain=self.drain)
        if not await self._until_done("setup", self._setup):
            return
        if not await self._until_done("own pending entries", self._finish_own_pending):
            return
        in_hand: set[asyncio.Task[None]] = set()
        linger_s = self.settings.worker_linger_ms / 1000
        archiving = asyncio.create_task(self._archive_until_done())
        try:
            while not self.stopping.is_set():
                self._touch_heartbeat()
                self._engines.maybe_reload_rules()
                await self._guarded("janitor", self._maybe_janitor)
                await self._guarded("trim", self._maybe_trim)
                entries = await self._guarded("read", self._read)
                if entries is None:
                    continue
                if not entries:
                    if self.drain:
                        break
                    continue
                committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(self._process(entries, committed))
                in_hand.add(task)
                task.add_done_callback(in_hand.discard)
                # Read ahead only into a backlog (a full read). Caught up, the next read
                # waits for this batch's commit, then lingers: what arrives meanwhile makes
                # one batch, not several small ones, each paying every round trip (waiting
                # for the batch: ~15 % less worker CPU at 1,000 txn/s; lingering 2 ms: ~30 %
                # less again, for ~1 ms more latency there and a lower p99 at 3,000 txn/s,
                # where fewer wake-ups matter more; not waiting for its publish: p99 lower
                # at 1,000 txn/s for ~4 % more worker CPU; see docs/performance.md).
                backlog = len(entries) >= self.settings.worker_batch_size
                if backlog:
                    while len(in_hand) >= PIPELINE_DEPTH:
                        await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                else:
                    # Caught up, the next read waits only until this batch is committed (or
                    # ended without a commit): its publish overlaps the linger and the read
                    # (at most two in hand).
                    await asyncio.wait((committed, task), return_when=asyncio.FIRST_COMPLETED)
                    while len(in_hand) > 1:
                        await asyncio.wait(in_hand, return_when=asyncio.FIRST_COMPLETED)
                    if linger_s and not self.drain:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.stopping.wait(), linger_s)
            if in_hand:
                await asyncio.wait(in_hand)  # finish (commit, publish, ack) what is in hand
            self._done.set()
            await archiving
        finally:
            for task in (*in_hand, archiving):
                task.cancel()  # only when we are cancelled ourselves (stop grace exceeded)
        await self._guarded("archive", self._archive_step)  # the last events published
        if self.drain:
            await self._guarded("pending check", self._count_left_pending)

    async def _count_left_pending(self) -> None:
        """A drain that leaves entries pending (they failed and will be retried) must not
        look like a clean one: ``run`` turns this count into a non-zero exit."""
        rows = await self._r.redis.xpending_range(
            self.settings.txn_stream, TXN_GROUP, "-", "+", 100_000, consumername=self.consumer
        )
        self.left_pending = len(rows)
        if rows:
            logger.error("drain ended with entries pending", pending=self.left_pending)

    # ---- steps of the loop -------------------------------------------------------------

    @property
    def _r(self) -> _Resources:
        assert self._res is not None, "Worker.start() first"
        return self._res

    async def _setup(self) -> None:
        s = self.settings
        assert self._archiver is not None
        assert self._engines is not None
        if await ensure_group(self._r.redis, s.txn_stream, TXN_GROUP, start_id="0"):
            logger.info("consumer group created", stream=s.txn_stream, group=TXN_GROUP)
        await self._archiver.setup()
        version = await blocklist.current_version(self._r.redis, s)
        await self._engines.sync_blocklist(self._r.pool, version)

    async def _recreate_groups(self) -> None:
        """After NOGROUP: the stream or group vanished (Redis restarted without
        persistence?). Recreate both groups once; what was pending there is lost."""
        assert self._archiver is not None
        logger.error(
            "consumer group missing: recreated (did Redis lose its data?)",
            alert=True,
            stream=self.settings.txn_stream,
        )
        await ensure_group(self._r.redis, self.settings.txn_stream, TXN_GROUP, start_id="0")
        await self._archiver.setup()

    async def _finish_own_pending(self) -> None:
        """Entries delivered to this consumer name before a restart: finish them first."""
        cursor = "0"
        while not self.stopping.is_set():
            entries = await self._read_group(self._r.redis, cursor, block=None)
            if not entries:
                return
            logger.info("resuming own pending entries", count=len(entries))
            await self._process(entries)
            cursor = entries[-1].id

    async def _read(self) -> list[StreamEntry]:
        return await self._read_group(self._r.reader, ">", block=self.settings.worker_block_ms)

    async def _read_group(self, client: Redis, cursor: str, block: int | None) -> list[StreamEntry]:
        reply = await client.xreadgroup(
            TXN_GROUP,
            self.consumer,
            {self.settings.txn_stream: cursor},
            count=self.settings.worker_batch_size,
            block=block,
        )
        return parse_read(reply)

    async def _archive_step(self) -> None:
        assert self._archiver is not None
        await self._archiver.step()

    async def _archive_until_done(self) -> None:
        """The archive's own loop: block on the events stream (own connection) and copy."""
        assert self._archiver is not None
        archiver = self._archiver
        block_ms = self.settings.worker_block_ms
        while not self._done.is_set():
            archived = await self._guarded(
                "archive", lambda: archiver.step(reader=self._r.events_reader, block_ms=block_ms)
            )
            if archived is not None and archived < READ_COUNT:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._done.wait(), ARCHIVE_LINGER_S)

    async def _maybe_janitor(self) -> None:
        """Reclaim entries idle too long (dead consumers', and our own failed ones)."""
        now = time.monotonic()
        if now < self._janitor_due:
            return
        self._janitor_due = now + self._janitor_interval
        assert self._archiver is not None
        s = self.settings
        cursor = "0-0"
        while not self.stopping.is_set():
            reply = await self._r.redis.xautoclaim(
                s.txn_stream,
                TXN_GROUP,
                self.consumer,
                s.worker_claim_idle_ms,
                start_id=cursor,
                count=s.worker_batch_size,
            )
            entries = parse_entries(reply[1])
            if entries:
                logger.info("reclaimed idle entries", count=len(entries), first=entries[0].id)
                await self._process(entries)
            cursor = _text(reply[0])
            if cursor == "0-0":
                break
        await self._archiver.reclaim(s.worker_claim_idle_ms)
        if now >= self._sweep_due:
            self._sweep_due = now + CONSUMER_SWEEP_S
            removed = await self._r.scripts.delete_idle_consumers(
                stream=s.txn_stream, group=TXN_GROUP, idle_ms=IDLE_CONSUMER_MS, keep=self.consumer
            )
            if removed:
                logger.info("deleted idle consumers", consumers=removed)

    async def _maybe_trim(self) -> None:
        for trimmer in self._trimmers:
            removed = await trimmer.maybe_trim()
            if removed:
                logger.debug("stream trimmed", stream=trimmer.stream, removed=removed)

    def _touch_heartbeat(self) -> None:
        if self._heartbeat is None:
            return
        try:
            self._heartbeat.touch()
        except OSError as e:
            logger.warning("heartbeat file not writable", path=str(self._heartbeat), error=str(e))
            self._heartbeat = None

    # ---- one batch ---------------------------------------------------------------------

    async def _process(
        self, entries: Sequence[StreamEntry], committed: asyncio.Future[None] | None = None
    ) -> None:
        """Handle a batch in hand until it is done, retrying through outages.

        An outage never counts against an entry: the same batch is retried, and while it is
        in hand its entries' idle time is kept fresh so nobody reclaims them. Past the stop
        deadline, or after an unexpected error, the batch is left pending for a restart or
        another worker (the janitor's reclaim then counts a delivery)."""
        assert self._batches is not None
        started = time.perf_counter()
        keeper = asyncio.create_task(self._keep_alive([e.id for e in entries]))
        stats: BatchStats | None = None
        try:
            while stats is None:
                try:
                    stats = await self._batches.handle(entries, committed)
                except OUTAGE_ERRORS as e:
                    if time.monotonic() > self._stop_deadline:
                        logger.warning(
                            "stopping with a batch unfinished; it stays pending",
                            size=len(entries),
                        )
                        return
                    await self._back_off("batch", e)
                except ResponseError as e:
                    if not _group_lost(e):
                        raise
                    # The group (and the entries' pending state) is gone: nothing to ack.
                    await self._guarded("recreate groups", self._recreate_groups)
                    return
        except Exception:
            # A bug, not an entry's fault: keep the worker alive, leave the batch pending.
            logger.exception("batch failed", size=len(entries), first=entries[0].id)
            await asyncio.sleep(BACKOFF_CAP_S)
            return
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        self._recovered()
        logger.debug(
            "batch done",
            size=len(entries),
            acked=stats.acked,
            dead=stats.dead,
            retry=stats.retry,
            lost=stats.lost,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def _keep_alive(self, ids: list[str]) -> None:
        """While a batch is in hand (a slow commit, an outage), reset its entries' idle
        time every third of the claim period; XCLAIM JUSTID does not count a delivery."""
        s = self.settings
        while True:
            await asyncio.sleep(s.worker_claim_idle_ms / 3000)
            try:
                await self._r.scripts.touch(
                    stream=s.txn_stream, group=TXN_GROUP, consumer=self.consumer, ids=ids
                )
            except OUTAGE_ERRORS:
                continue  # Redis down: nobody can reclaim the entries either
            except ResponseError as e:
                if not _group_lost(e):
                    raise
                return

    # ---- outages -----------------------------------------------------------------------

    async def _guarded[T](self, what: str, op: Callable[[], Awaitable[T]]) -> T | None:
        """Run ``op``; on an outage log, back off and return None (the loop goes on)."""
        try:
            result = await op()
        except OUTAGE_ERRORS as e:
            await self._back_off(what, e)
            return None
        except ResponseError as e:
            if not _group_lost(e):
                raise
            await self._guarded("recreate groups", self._recreate_groups)
            return None
        self._recovered()
        return result

    async def _until_done(self, what: str, op: Callable[[], Awaitable[None]]) -> bool:
        """Retry ``op`` through outages until it succeeds (True) or we are stopping."""
        while not self.stopping.is_set():
            try:
                await op()
            except OUTAGE_ERRORS as e:
                await self._back_off(what, e)
                continue
            except ResponseError as e:
                if not _group_lost(e):
                    raise
                await self._guarded("recreate groups", self._recreate_groups)
                continue
            self._recovered()
            return True
        return False

    async def _back_off(self, what: str, error: Exception) -> None:
        """Wait before retrying after an outage: exponential, capped at ``BACKOFF_CAP_S``,
        logged at most every ``OUTAGE_LOG_S``; a stop request cuts the wait short."""
        now = time.monotonic()
        if self._outage_since is None or now - self._outage_logged >= OUTAGE_LOG_S:
            self._outage_since = self._outage_since or now
            self._outage_logged = now
            logger.warning(
                "dependency unavailable, retrying",
                step=what,
                error=f"{type(error).__name__}: {error}",
                outage_s=round(now - self._outage_since, 1),
            )
        self._touch_heartbeat()  # alive and doing the right thing: waiting out an outage
        if self.stopping.is_set():
            await asyncio.sleep(self._backoff)  # finishing the batch in hand: keep pacing
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self._backoff)
        self._backoff = min(self._backoff * 2, BACKOFF_CAP_S)

    def _recovered(self) -> None:
        self._backoff = BACKOFF_START_S
        if self._outage_since is not None:
            logger.info(
                "dependencies available again",
                outage_s=round(time.monotonic() - self._outage_since, 1),
            )
            self._outage_since = None


def _group_lost(error: ResponseError) -> bool:
    """NOGROUP, or a blocked read cut short because its stream was deleted (Redis 7)."""
    return is_nogroup(error) or "stream key no longer exists" in str(error)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def consumer_name(settings: Settings) -> str:
    """``settings.worker_consumer``, or ``hostname-pid``: unique per process."""
    return settings.worker_consumer or f"{socket.gethostname()}-{os.getpid()}"


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    try:
        worker.settings.require("redis_url", "database_url")
        await worker.start()
        settle_after_startup()
        work = asyncio.create_task(worker.loop())
        stop = asyncio.create_task(worker.stopping.wait())
        await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            try:
                await asyncio.wait_for(work, STOP_GRACE_S)
            except TimeoutError:
                logger.warning("worker did not finish in time; its batch stays pending")
        stop.cancel()
        if not work.cancelled():
            work.result()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await worker.stop()


def _fault_crash_after_commit() -> int | None:
    # Test-only fault hook, deliberately not a Setting (see the module docstring).
    raw = os.environ.get(FAULT_CRASH_ENV, "").strip()
    return int(raw) if raw else None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with granian[uvloop]
        return None
    return uvloop.new_event_loop


def run(settings: Settings, *, drain: bool = False) -> int:
    """Run a worker until SIGTERM/SIGINT (or, with ``drain``, until the stream is empty).

    Returns the process exit code: 0 after a clean stop, 1 when a drain left entries
    pending (they failed; another run retries them), 2 for a configuration error."""
    worker = Worker(
        settings,
        consumer=consumer_name(settings),
        drain=drain,
        crash_after_commits=_fault_crash_after_commit(),
    )
    try:
        asyncio.run(_serve(worker), loop_factory=_loop_factory())
    except (SettingsError, RuleSettingsError) as e:
        logger.error("worker configuration error", error=str(e))
        return 2
    return 1 if worker.left_pending else 0
