"""The hand-off: making accepted transactions durable in Redis, atomically and in bulk.

Each transaction goes through one Lua script that, in one atomic step, takes a token from
its client's rate-limit bucket (see ``ratelimit``), checks and sets its idempotency key,
appends it to the transactions stream and records it in the user's activity ledger
(scored by its stream position, see ``fintrack.core.activity``). One call of
the script takes a whole batch (each item still its own rate check, idempotency check and
append) in one round trip; ``Coalescer`` lets
concurrent single submissions share such a round trip.

Idempotency is scoped like this: a ``txn_id`` is globally unique (it is the primary key in
PostgreSQL), but the *replay* answer is only given to the API client that used it first,
with the same body. Same ``txn_id``, same client, same body → "duplicate" (the original
202 is repeated, nothing is enqueued); a different body or a different client → "conflict"
(409). The key lives ``idempotency_ttl_s``; the body is compared by a SHA-256 fingerprint
of the validated transaction without its arrival time, so ``200000`` and ``200000.00``,
or an omitted currency and the default one, are the same body.

Entries are never trimmed here: trimming could drop entries no worker has acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Sequence
from typing import Final, Literal, NamedTuple

import msgspec
import structlog
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from fintrack.config import Settings
from fintrack.core.activity import activity_key, encode_member
from fintrack.core.errors import UnavailableError
from fintrack.core.models import Transaction, transaction_encoder
from fintrack.ingest import metrics
from fintrack.ingest.ratelimit import BUCKET_LUA, bucket_key

log = structlog.get_logger(__name__)

HANDOFF_TIMEOUT_S: Final = 1.5  # a 503 in 1.5 s beats a client timing out on us

# One call hands off a whole batch; each item goes through the same steps, in order, as if
# it had a script of its own (the rate limit, idempotency and the stream see the items one
# after another).
# KEYS: the transactions stream.
# ARGV: idempotency TTL (s), activity retention (s), rate limit (0: off), rate window (ms),
#   then the batch as one MessagePack document: a list of items [idempotency key, activity
#   ledger key of the user, rate-limit bucket key of the client, "client|fingerprint",
#   encoded transaction, ledger member], all strings. (One argument for the batch: packing
#   several arguments per item was most of the api's hand-off CPU, and cmsgpack is C.
#   The per-item keys travel in it, so this script assumes a single Redis, not a cluster.)
# Returns one reply per item: its stream id, 'dup', 'conflict', 'rate:<ms to wait>', or
#   'err:<message>' when Redis refused a write (e.g. out of memory; nothing of it written).
# Scores are formatted with %.0f: Lua would print a number above 1e14 as 1.7e+15.
# The rate check only reads until the item is known to count; the idempotency claim (SET NX
# GET, Redis 7+) and XADD run before any other write of an accepted item, and a refused
# XADD deletes the claim, so a refused item leaves nothing behind.
SCRIPT: Final = (
    BUCKET_LUA
    + """
local ttl, retention_ms = ARGV[1], tonumber(ARGV[2]) * 1000
local limit, window = tonumber(ARGV[3]), tonumber(ARGV[4])
local replies = {}
local newest, ledgers = {}, {}  -- per ledger written: the newest ms added; in order
for i, item in ipairs(cmsgpack.unpack(ARGV[5])) do
  local idem, ledger, rate = item[1], item[2], item[3]
  local left, now
  if limit > 0 then left, now = bucket(rate, limit, window) end
  if limit > 0 and left < 0 then
    replies[i] = 'rate:' .. string.format('%.0f', -left)
  else
    -- Claims the key if it is free, else answers what it holds: one call, not GET + SET.
    local prior = redis.pcall('SET', idem, item[4], 'NX', 'GET', 'EX', ttl)
    if type(prior) == 'table' then
      replies[i] = 'err:' .. tostring(prior.err)
    elseif prior then
      if limit > 0 then spend(rate, left, now, window) end
      if prior == item[4] then replies[i] = 'dup' else replies[i] = 'conflict' end
    else
      local id = redis.pcall('XADD', KEYS[1], '*', 'txn', item[5])
      if type(id) == 'table' then
        redis.call('DEL', idem)  -- the claim goes too: nothing of the item is left
        replies[i] = 'err:' .. tostring(id.err)
      else
        if limit > 0 then spend(rate, left, now, window) end
        local dash = string.find(id, '-', 1, true)
        local ms = tonumber(string.sub(id, 1, dash - 1))
        local seq = math.min(tonumber(string.sub(id, dash + 1)), 999)
        redis.call('ZADD', ledger, 'NX', string.format('%.0f', ms * 1000 + seq), item[6])
        if not newest[ledger] then ledgers[#ledgers + 1] = ledger end
        newest[ledger] = ms
        replies[i] = id
      end
    end
  end
end
-- Housekeeping once per ledger, not per item: members past 2x retention out (relative to
-- its newest member), the key's expiry renewed.
for _, ledger in ipairs(ledgers) do
  redis.call('ZREMRANGEBYSCORE', ledger, '-inf',
    '(' .. string.format('%.0f', (newest[ledger] - 2 * retention_ms) * 1000))
  redis.call('PEXPIRE', ledger, string.format('%.0f', 2 * retention_ms))
end
return replies
"""
)
_packer: Final = msgspec.msgpack.Encoder()
_SHA: Final = hashlib.sha1(SCRIPT.encode()).hexdigest()  # noqa: S324 -- Redis names scripts by SHA-1

Outcome = Literal["accepted", "duplicate", "conflict", "limited", "failed"]


class HandOffResult(NamedTuple):
    """What happened to one transaction: ``entry_id`` is its stream id when accepted;
    ``retry_after_ms`` says when a rate-limited client may try again."""

    outcome: Outcome
    entry_id: str | None = None
    retry_after_ms: int = 0


_new = tuple.__new__  # skips a NamedTuple's Python-level __new__ on the hot path


def idempotency_key(settings: Settings, txn_id: str) -> str:
    return f"{settings.key_prefix}:idem:{txn_id}"


def fingerprint(txn: Transaction) -> str:
    """SHA-256 of the canonical transaction without its arrival time."""
    return payload_fingerprint(transaction_encoder.encode(txn))


def payload_fingerprint(payload: bytes) -> str:
    """``fingerprint`` of the transaction ``payload`` encodes, without decoding it: the
    encoding is a JSON array whose last item is the arrival time (an integer), replaced
    by 0 here. (The hand-off encodes each transaction once for both.)"""
    return hashlib.sha256(payload[: payload.rindex(b",") + 1] + b"0]").hexdigest()


def idempotency_owner(value: bytes | str) -> str:
    """The client id stored in an idempotency key's value."""
    text = value.decode() if isinstance(value, bytes) else value
    return text.rpartition("|")[0]


class HandOff:
    """Sends transactions to Redis: one script call (and round trip) per batch, each
    transaction handled by it on its own, as if by a script of its own."""

    __slots__ = ("_redis", "_settings", "_timeout_s")

    def __init__(
        self, redis: Redis, settings: Settings, *, timeout_s: float = HANDOFF_TIMEOUT_S
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._timeout_s = timeout_s

    async def submit_many(self, txns: Sequence[Transaction]) -> list[HandOffResult]:
        """Hand off ``txns`` in order; one result per transaction.

        Raises ``UnavailableError`` when the round trip fails as a whole (then nothing, or,
        if the script broke or the connection dropped mid-way, a prefix was enqueued: a
        retry with the same ``txn_id`` is answered as a duplicate). A transaction whose
        append Redis refused yields "failed".
        """
        if not txns:
            return []
        started = time.perf_counter()
        batch = self._pack(txns)
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    replies = await self._run(batch)
                except NoScriptError:
                    # Redis restarted or SCRIPT FLUSH: NOSCRIPT means the script did not run.
                    await self._redis.script_load(SCRIPT)
                    replies = await self._run(batch)
        except (RedisError, OSError, TimeoutError) as e:
            # The cause (hosts, ports) goes to the log, not to the client.
            log.warning("hand-off failed", transactions=len(txns), error=repr(e))
            raise UnavailableError("Redis did not take the transaction; nothing accepted") from e
        finally:
            metrics.HANDOFF_SECONDS.observe(time.perf_counter() - started)
            metrics.HANDOFF_BATCH_SIZE.observe(len(txns))
        return [self._result(txn, reply) for txn, reply in zip(txns, replies, strict=True)]

    def _pack(self, txns: Sequence[Transaction]) -> bytes:
        s = self._settings
        # Every id as text in one call (msgspec does it in C; str() of a UUID is slow).
        txn_ids: list[str] = msgspec.to_builtins([txn.txn_id for txn in txns])
        encode = transaction_encoder.encode
        # Strings only: Valkey's cmsgpack refuses MessagePack's bin type.
        return _packer.encode(
            [
                (
                    idempotency_key(s, txn_id),
                    activity_key(s, txn.user_id),
                    bucket_key(s, txn.client_id),
                    f"{txn.client_id}|{payload_fingerprint(payload)}",
                    payload.decode(),
                    encode_member(txn, txn_id),
                )
                for txn, txn_id, payload in zip(
                    txns, txn_ids, [encode(txn) for txn in txns], strict=True
                )
            ]
        )

    async def _run(self, batch: bytes) -> list[object]:
        s = self._settings
        # EVALSHA, not redis-py's Script: that costs an extra SCRIPT EXISTS round trip.
        replies = await self._redis.evalsha(
            _SHA,
            1,
            s.txn_stream,
            s.idempotency_ttl_s,
            s.activity_retention_s,
            s.rate_limit,
            s.rate_window_ms,
            batch,
        )
        return list(replies)

    @staticmethod
    def _result(txn: Transaction, reply: object) -> HandOffResult:
        # Almost every reply is a stream id ("<ms>-<seq>"): answered before the matching.
        if type(reply) is bytes and reply[:1].isdigit():
            return _new(HandOffResult, ("accepted", reply.decode(), 0))
        match reply:
            case b"dup":
                return HandOffResult("duplicate")
            case b"conflict":
                return HandOffResult("conflict")
            case bytes() if reply.startswith(b"rate:"):
                return HandOffResult("limited", retry_after_ms=int(reply[5:]))
            case bytes() if reply.startswith(b"err:"):
                log.error("hand-off refused", txn_id=str(txn.txn_id), error=reply[4:].decode())
            case bytes():
                return HandOffResult("accepted", reply.decode())
        return HandOffResult("failed")


class _Pending(NamedTuple):
    txn: Transaction
    future: asyncio.Future[HandOffResult]


class Coalescer:
    """Lets concurrent single submissions share one round trip.

    Submissions queue up; one flusher task takes everything queued so far and hands it
    off in one ``HandOff.submit_many`` call, while the next submissions queue for the
    following round trip. Each caller awaits its own future; if the round trip fails,
    every caller in it gets ``UnavailableError`` (a 503, never a 202).
    """

    __slots__ = ("_handoff", "_max_batch", "_queue", "_task")

    def __init__(self, handoff: HandOff, *, max_batch: int = 1000) -> None:
        self._handoff = handoff
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the flusher task (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._flush_forever(), name="handoff-flusher")

    async def stop(self) -> None:
        """Stop the flusher; submissions still queued fail with ``UnavailableError``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        queued = []
        while not self._queue.empty():
            queued.append(self._queue.get_nowait())
        _fail(queued, "the api is shutting down")

    async def submit(self, txn: Transaction) -> HandOffResult:
        """Hand off one transaction together with whatever else is being submitted."""
        if self._task is None:
            raise UnavailableError("the api is shutting down")
        future: asyncio.Future[HandOffResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(txn, future))
        return await future

    async def _flush_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            # A caller that gave up (client disconnected) is not sent at all.
            live = [p for p in batch if not p.future.done()]
            if not live:
                continue
            try:
                await self._flush(live)
            except asyncio.CancelledError:
                _fail(live, "the api is shutting down")
                raise

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            results = await self._handoff.submit_many([p.txn for p in batch])
        except UnavailableError as e:
            _fail(batch, str(e))
            return
        except Exception as e:  # a bug must fail these callers, not the flusher all later ones need
            log.error("hand-off flush failed", exc_info=e)
            _fail(batch, "internal hand-off error")
            return
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)


def _fail(batch: list[_Pending], reason: str) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(UnavailableError(reason))
