"""Lua scripts: the steps that must be atomic on the Redis side of the worker.

Each check-then-act runs inside one script so no other client can slip in between: a
worker publishes and acknowledges an entry only while the entry is still pending for it,
so an entry reclaimed by another worker is published by exactly one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec
from redis.asyncio import Redis

# Shared helper: compare two stream ids "ms-seq" numerically.
_ID_LT = """
local function id_lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
"""

# KEYS: txns stream, events stream, dead-letter stream.
# ARGV: group, consumer, dead-letter maxlen, lowest id, highest id, then the batch as one
#   MessagePack document: [event field names, items], each item [id, dead, values] where
#   dead is false or [payload, error, attempts] and values holds every event's field
#   values in order, event after event. (One argument for the whole batch: packing
#   thousands of arguments was the client's largest cost here, and cmsgpack is C.)
# Ownership is read once for the batch (XPENDING over its id range, this consumer only).
# Returns the ids it did not acknowledge (almost always none: a short reply to parse).
_PUBLISH_AND_ACK = """
local group, me, dead_maxlen = ARGV[1], ARGV[2], ARGV[3]
local owned = {}
local pending = redis.pcall('XPENDING', KEYS[1], group, ARGV[4], ARGV[5], 2147483647, me)
if type(pending) == 'table' and pending.err == nil then
  for _, e in ipairs(pending) do owned[e[1]] = true end
end
local batch = cmsgpack.unpack(ARGV[6])
local names, items = batch[1], batch[2]
local n_fields = #names
local fields = {}
local acked, skipped = {}, {}
for _, item in ipairs(items) do
  local id, dead, values = item[1], item[2], item[3]
  if not owned[id] then
    if owned[id] == nil then skipped[#skipped + 1] = id end
  else
    owned[id] = false  -- an id listed twice is handled (and reported acked) once
    if dead then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', dead_maxlen, '*',
        'entry', id, 'payload', dead[1], 'error', dead[2], 'attempts', dead[3])
    end
    for at = 0, #values - 1, n_fields do
      for f = 1, n_fields do
        fields[2 * f - 1] = names[f]
        fields[2 * f] = values[at + f]
      end
      redis.call('XADD', KEYS[2], '*', unpack(fields))
    end
    acked[#acked + 1] = id
  end
end
for at = 1, #acked, 1000 do  -- unpack() has a stack limit: ack in chunks
  redis.call('XACK', KEYS[1], group, unpack(acked, at, math.min(at + 999, #acked)))
end
return skipped
"""

# KEYS: stream. ARGV: group, then the ids as one MessagePack list (packing a thousand
# arguments one by one costs the client more than acknowledging them costs Redis).
# Returns how many were acknowledged.
_ACK = """
local ids = cmsgpack.unpack(ARGV[2])
local n = 0
for at = 1, #ids, 1000 do  -- unpack() has a stack limit: ack in chunks
  n = n + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids, at, math.min(at + 999, #ids)))
end
return n
"""

# KEYS: stream. ARGV: group, consumer, ids... Resets the idle time of those ids still
# pending for this consumer (XCLAIM JUSTID does not count as a delivery), so a worker
# waiting out an outage keeps its batch instead of having it reclaimed and re-counted.
_TOUCH = """
local n = 0
for i = 3, #ARGV do
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if type(p) == 'table' and p[1] ~= nil and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# KEYS: stream. ARGV: candidate min id (keeps the retention), or '' for none.
# Trims below the smallest of: the candidate, and for every group on the stream its oldest
# pending id and its last-delivered id. Nothing unacknowledged is ever removed.
_TRIM = (
    _ID_LT
    + """
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups.err ~= nil or #groups == 0 then return 0 end  -- no stream, or nobody reads it
local limit = ARGV[1]
if limit == '' then return 0 end
for _, g in ipairs(groups) do
  local name, last
  for k = 1, #g, 2 do
    if g[k] == 'name' then name = g[k + 1] end
    if g[k] == 'last-delivered-id' then last = g[k + 1] end
  end
  if id_lt(last, limit) then limit = last end
  local p = redis.call('XPENDING', KEYS[1], name)
  if p[1] > 0 and id_lt(p[2], limit) then limit = p[2] end
end
return redis.call('XTRIM', KEYS[1], 'MINID', limit)
"""
)

# KEYS: stream. ARGV: group, min idle ms, own consumer name. Deletes consumers that have
# nothing pending and have not been seen for a long time; atomic, so no entry can be
# delivered to a consumer between the check and the delete (which would lose it).
_DELETE_IDLE_CONSUMERS = """
local removed = {}
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, c in ipairs(consumers) do
  local name, pending, idle
  for k = 1, #c, 2 do
    if c[k] == 'name' then name = c[k + 1]
    elseif c[k] == 'pending' then pending = c[k + 1]
    elseif c[k] == 'idle' then idle = c[k + 1] end
  end
  if name ~= ARGV[3] and pending == 0 and idle > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)
    removed[#removed + 1] = name
  end
end
return removed
"""


# KEYS: the blocklist version key, then one activity ledger per user.
# ARGV: the exclusive lower and the inclusive upper score (the same for every ledger), the
#   batch's lowest score, the cap, and a MessagePack list of [position, known, since,
#   count, capped]: the ledgers (1-based positions among the ledgers) the worker holds
#   from `since` (exclusive) up to `known`, `count` members in that range, `capped` 1 for
#   a ledger it holds as read capped. (Scores travel as text: Lua would print a large
#   number in exponent form.)
# Per ledger, flat [member, score, ...]: every member scored in (lower, upper] when there
# are at most `cap` of them; else (a busy user: "anonymous", an aggregator) those in
# (lowest, upper] and the newest `cap` at or below the lowest, so that the reply stays
# bounded however busy the user. For a ledger the worker holds, whose ZCOUNT over
# (since, known] still matches, with at most `cap` members in (known, upper] (and, unless
# held capped, at most `cap` in all): only the members in (known, upper].
# Returns {version or nil, ledgers..., positions read capped, positions read short}.
# Read-only; one round trip and one reply to parse instead of a pipeline of replies
# (measured: several times less CPU).
_READ_LEDGERS = """
local out = {redis.call('GET', KEYS[1])}
local lower, upper = '(' .. ARGV[1], ARGV[2]
local lowest, cap = ARGV[3], tonumber(ARGV[4])
local known = {}
for _, k in ipairs(cmsgpack.unpack(ARGV[5])) do known[k[1]] = k end
local capped, short = {}, {}
for i = 2, #KEYS do
  local members
  local k = known[i - 1]
  if k then
    members = redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. k[2], upper, 'WITHSCORES',
      'LIMIT', 0, cap + 1)
    local n = #members / 2
    if n <= cap and (k[5] == 1 or k[4] + n <= cap)
        and redis.call('ZCOUNT', KEYS[i], '(' .. k[3], k[2]) == k[4] then
      short[#short + 1] = i - 1
    else
      members = nil
    end
  end
  if members == nil then
    members = redis.call('ZRANGEBYSCORE', KEYS[i], lower, upper, 'WITHSCORES',
      'LIMIT', 0, cap + 1)
    if #members > 2 * cap then
      members = redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. lowest, upper, 'WITHSCORES')
      local older = redis.call('ZREVRANGEBYSCORE', KEYS[i], lowest, lower, 'WITHSCORES',
        'LIMIT', 0, cap)
      for _, value in ipairs(older) do members[#members + 1] = value end
      capped[#capped + 1] = i - 1
    end
  end
  out[i] = members
end
out[#KEYS + 1] = capped
out[#KEYS + 2] = short
return out
"""


# A script call holds Redis while it runs, and every api hand-off waits behind it: a big
# batch's scripts run in several calls, one round trip each, so hand-offs run in between.
# Sets per ledger-read call: 1,000 busy users' ledgers held Redis for up to 25 ms in one
# call here, 1,000 quiet users' for ~14 ms. Entries per publish-and-ack call: 10-17 ms per
# 1,000.
LEDGER_CHUNK = 500
PUBLISH_CHUNK = 1_000


class Known(NamedTuple):
    """A ledger the caller holds: see ``Scripts.read_ledgers``."""

    position: int  # 0-based, in ``keys``
    upper: int
    since: int
    members: int  # how many are held in (since, upper]
    capped: bool


class LedgerReply(NamedTuple):
    """What ``Scripts.read_ledgers`` returns."""

    version: bytes | None
    ledgers: list[list[bytes]]
    capped: list[int]  # 0-based positions of the ledgers read capped
    short: list[int]  # 0-based positions of the ledgers read past the known score only


class DeadLetter(NamedTuple):
    """What the dead-letter stream records about an entry that kept failing."""

    payload: bytes
    error: str
    attempts: int


class Publication(NamedTuple):
    """What to do atomically for one entry: dead-letter it (optional), publish its events
    (the values of the event fields, in order, event after event), acknowledge it."""

    entry_id: str
    dead: DeadLetter | None
    values: Sequence[str]


_msgpack = msgspec.msgpack.Encoder()


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Scripts:
    """The worker's Lua scripts, registered once on one client."""

    __slots__ = ("_ack", "_delete_idle", "_ledgers", "_publish", "_redis", "_touch", "_trim")

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._publish = redis.register_script(_PUBLISH_AND_ACK)
        self._touch = redis.register_script(_TOUCH)
        self._trim = redis.register_script(_TRIM)
        self._delete_idle = redis.register_script(_DELETE_IDLE_CONSUMERS)
        self._ledgers = redis.register_script(_READ_LEDGERS)
        self._ack = redis.register_script(_ACK)

    async def read_ledgers(
        self,
        version_key: str,
        keys: Sequence[str],
        lower: int,
        upper: int,
        lowest: int,
        cap: int,
        known: Sequence[Known] = (),
    ) -> LedgerReply:
        """The value at ``version_key``; for each sorted set in ``keys`` the flat
        ``[member, score, ...]`` list of its members scored in ``(lower, upper]``, or for
        a set with more than ``cap`` of them, of those in ``(lowest, upper]`` and the
        newest ``cap`` at or below ``lowest``; and the (0-based) indexes of those sets.

        ``known``: sets whose members in ``(since, upper]`` the caller holds. If such a
        set still has that many (``members``) there and at most ``cap`` above (and, unless held
        ``capped``, at most ``cap`` above ``lower`` in all), only its members in
        ``(upper, the upper argument]`` are returned, and its index is listed in
        ``short``."""
        # In calls of LEDGER_CHUNK sets (see there). Every call reads the same score range,
        # so the figures do not depend on when each set was read.
        result = LedgerReply(None, [], [], [])
        for start in range(0, max(len(keys), 1), LEDGER_CHUNK):
            chunk = keys[start : start + LEDGER_CHUNK]
            document = _msgpack.encode(
                [
                    (k.position - start + 1, str(k.upper), str(k.since), k.members, int(k.capped))
                    for k in known
                    if start <= k.position < start + LEDGER_CHUNK
                ]
            )
            reply = await self._ledgers(
                keys=[version_key, *chunk], args=[lower, upper, lowest, cap, document]
            )
            if start == 0:
                result = result._replace(version=reply[0])
            # A missing key is `false` in Lua: it holds its slot and comes back as None.
            result.ledgers.extend(reply[1:-2])
            result.capped.extend(int(i) - 1 + start for i in reply[-2])
            result.short.extend(int(i) - 1 + start for i in reply[-1])
        return result

    async def publish_and_ack(
        self,
        *,
        stream: str,
        events_stream: str,
        dead_stream: str,
        dead_maxlen: int,
        group: str,
        consumer: str,
        event_fields: Sequence[str],
        items: Sequence[Publication],
    ) -> set[str]:
        """For each item still pending for ``consumer``: dead-letter, publish, ack. Returns
        the ids acknowledged (the others were reclaimed by another consumer meanwhile).
        In calls of ``PUBLISH_CHUNK`` items, one round trip each (see ``read_ledgers``);
        each item is published and acked atomically within its call."""
        if not items:
            return set()
        n_fields = len(event_fields)
        if not n_fields:
            raise ValueError("events need at least one field")
        # Only MessagePack *str* values: Valkey's cmsgpack refuses the bin type that
        # bytes would be encoded as ("Bad data format in input"); Redis 7 accepts both.
        packed: list[tuple[str, tuple[str, str, str] | bool, Sequence[str]]] = []
        for item in items:
            if len(item.values) % n_fields:
                raise ValueError("every event must have exactly the event fields")
            dead = item.dead
            packed.append(
                (
                    item.entry_id,
                    False
                    if dead is None
                    # A poison payload may be any bytes: keep them readable, escaped.
                    else (
                        dead.payload.decode("utf-8", "backslashreplace"),
                        dead.error,
                        str(dead.attempts),
                    ),
                    item.values,
                )
            )
        acked = {item.entry_id for item in items}
        fields = tuple(event_fields)
        for start in range(0, len(items), PUBLISH_CHUNK):
            ids = [_id_key(item.entry_id) for item in items[start : start + PUBLISH_CHUNK]]
            lowest = "{}-{}".format(*min(ids))
            highest = "{}-{}".format(*max(ids))
            document = _msgpack.encode((fields, packed[start : start + PUBLISH_CHUNK]))
            args = (group, consumer, dead_maxlen, lowest, highest, document)
            skipped = await self._publish(keys=[stream, events_stream, dead_stream], args=args)
            acked.difference_update(_text(i) for i in skipped)
        return acked

    async def ack(self, *, stream: str, group: str, ids: Sequence[str]) -> int:
        """XACK ``ids`` (any number) for ``group``; returns how many were pending."""
        if not ids:
            return 0
        return int(await self._ack(keys=[stream], args=[group, _msgpack.encode(ids)]))

    async def touch(self, *, stream: str, group: str, consumer: str, ids: Sequence[str]) -> int:
        """Reset the idle time of ``ids`` still pending for ``consumer``; returns how many."""
        if not ids:
            return 0
        return int(await self._touch(keys=[stream], args=[group, consumer, *ids]))

    async def trim(self, *, stream: str, min_id: str) -> int:
        """Trim ``stream`` below ``min_id``, but never past what any group still needs."""
        return int(await self._trim(keys=[stream], args=[min_id]))

    async def delete_idle_consumers(
        self, *, stream: str, group: str, idle_ms: int, keep: str
    ) -> list[str]:
        """Delete ``group``'s consumers idle longer than ``idle_ms`` with nothing pending."""
        removed = await self._delete_idle(keys=[stream], args=[group, idle_ms, keep])
        return [_text(name) for name in removed]
