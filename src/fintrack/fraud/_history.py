"""Facts for a batch: each user's activity ledger, read in one round trip.

The worker only ever reads the ledger (the api writes it atomically with the enqueue), so
the figures for a transaction depend on its stream position alone, not on which worker
decides it, when, or how many times.

A busy user's ledger is read capped (``SUM_CAP`` entries per window, see
``_scripts._READ_LEDGERS``), and its windows' exact counts come from ZCOUNTs (a second
round trip, only for batches with such a user): counts stay exact, and an amount sums the
window's newest ``SUM_CAP`` entries (the rest are ``unsummed``). Both depend only on the
ledger and the transaction's position, so the figures are still the same in any batch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from decimal import Decimal
from typing import NamedTuple

from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.core.activity import activity_key, window_start
from fintrack.core.blocklist import version_key
from fintrack.fraud._scripts import Known, Scripts
from fintrack.fraud.facts import Facts
from fintrack.fraud.settings import RuleSettings
from fintrack.fraud.velocity import SUM_CAP, HistoryIndex, history_bounds

NO_FACTS = Facts()
# Ledgers a worker keeps between batches: users with at least CACHE_MIN entries in the
# batch's range (most users have one or two: re-reading them costs what checking would),
# at most CACHE_BUDGET entries in all (~200 bytes each).
CACHE_MIN = 8
CACHE_BUDGET = 200_000
COMPACT_MIN = 1_024  # a held ledger sheds its entries older than every window past this


class _Entry(NamedTuple):
    """A ledger member as the velocity figures use it (``core.activity.Activity`` without
    the txn_id, whose parsing was most of the cost)."""

    score: int
    amount: Decimal
    currency: str


def _parse(member: bytes, score: bytes) -> _Entry:
    """``txn_id|amount|currency`` (see ``core.activity.encode_member``) and its score;
    ``ValueError``/``ArithmeticError`` if it is not in that form."""
    txn_id, amount, currency = member.decode().split("|")
    if len(txn_id) != 36 or not currency:
        raise ValueError(f"not a ledger member: {member[:80]!r}")
    return _Entry(int(float(score)), Decimal(amount), currency)


# A busy user's ledger is read again for every batch the user appears in; parsing costs
# more than the lookup. Members never change: safe to cache. Bounded: about 15 MB at most.
# (A ledger of one member, most users', is parsed without: it would only crowd the cache.)
_decode = functools.lru_cache(maxsize=1 << 16)(_parse)


class Histories(NamedTuple):
    """Per user: the ledger slice covering every window of the batch, indexed once for all
    of the user's transactions in the batch, or why it could not be read (a corrupt member
    fails that user's transactions, not the batch). ``counts``: the exact window counts of
    each (user, score) whose ledger was read capped."""

    by_user: dict[str, HistoryIndex | ValueError]
    blocklist_version: int
    counts: dict[tuple[str, int], list[int]]


class _Held:
    """A user's ledger as a worker holds it: every member scored in ``(lower, upper]``
    (and, read capped, maybe some scored ``lower``: harmless, windows are searched)."""

    __slots__ = ("capped", "index", "lower", "upper")

    def __init__(self, index: HistoryIndex, lower: int, upper: int, *, capped: bool) -> None:
        self.index = index
        self.lower = lower
        self.upper = upper
        self.capped = capped  # a busy user's: the index sums the newest SUM_CAP per window


class LedgerCache:
    """Ledgers of users with a long history, kept between batches (least recently used
    first out, at most ``budget`` entries), so that a batch reads only what was added
    since. Never trusted blindly: the read script checks that the ledger still holds as
    many members up to the held score as the cache does, and reads it all if not. The
    ledger only grows at the top (scores are stream positions), so the members up to a
    score seen once stay the same; a lost or trimmed ledger fails the check. Built for
    one ``RuleSettings`` (amounts are converted with its rates): cleared when they change.

    A busy user's ledger (read capped) is held from its newest ``SUM_CAP`` entries before
    a batch on, which is all its capped figures need (counts come from ZCOUNTs anyway).
    """

    __slots__ = ("_held", "_rules", "_size", "budget", "min_entries")

    def __init__(self, *, budget: int = CACHE_BUDGET, min_entries: int = CACHE_MIN) -> None:
        self.budget = budget
        self.min_entries = min_entries
        self._held: dict[str, _Held] = {}
        self._rules: RuleSettings | None = None
        self._size = 0

    def lookup(self, user_id: str, lower: int, lowest: int, rules: RuleSettings) -> _Held | None:
        """What is held of ``user_id``'s ledger if it serves a batch whose windows start
        above ``lower`` and whose oldest transaction is scored ``lowest``."""
        if rules is not self._rules:
            self._held.clear()
            self._size = 0
            self._rules = rules
            return None
        held = self._held.get(user_id)
        if held is None:
            return None
        index = held.index
        if held.capped:
            older = index.size - index.count_above(lowest)  # entries at or below lowest
            if older > SUM_CAP + COMPACT_MIN:
                # Only the newest SUM_CAP at or below the batch are needed: a smaller copy.
                cut = index.score_at(older - SUM_CAP - 1)
                held = self._replace(user_id, held, _Held(
                    index.without_below(cut), max(cut, held.lower), held.upper, capped=True
                ))  # fmt: skip
                index = held.index
            if held.lower > lower and (
                index.count_above(held.lower) - index.count_above(lowest) < SUM_CAP
            ):
                return None  # not enough before the batch to sum its windows' newest
            return held
        if held.lower > lower:
            return None
        if index.size - index.count_above(lower) > max(COMPACT_MIN, index.size // 2):
            # Mostly older than every window now: a smaller copy (others may hold this one).
            held = self._replace(
                user_id, held, _Held(index.without_below(lower), lower, held.upper, capped=False)
            )
        return held

    def _replace(self, user_id: str, old: _Held, new: _Held) -> _Held:
        self._size += new.index.size - old.index.size
        self._held[user_id] = new
        return new

    def keep(self, user_id: str, held: _Held, *, stale: bool = False) -> None:
        """Hold ``held`` for ``user_id`` (as the most recently used), unless what is held
        reaches further up (a reclaimed older batch) and was not found ``stale``."""
        old = self._held.pop(user_id, None)
        if old is not None:
            if old.upper > held.upper and not stale:
                self._held[user_id] = old
                return
            self._size -= old.index.size
        self._held[user_id] = held
        self._size += held.index.size
        while self._size > self.budget and self._held:
            evicted = self._held.pop(next(iter(self._held)))
            self._size -= evicted.index.size

    def drop(self, user_id: str) -> None:
        old = self._held.pop(user_id, None)
        if old is not None:
            self._size -= old.index.size

    def used(self, user_id: str, held: _Held, added: int) -> None:
        """``held`` was read again and extended by ``added`` entries."""
        if self._held.get(user_id) is held:
            self._size += added
            self._held[user_id] = self._held.pop(user_id)  # the most recently used now


async def fetch_histories(
    scripts: Scripts,
    redis: Redis,
    settings: Settings,
    rules: RuleSettings,
    batch: Sequence[tuple[str, int]],
    cache: LedgerCache | None = None,
) -> Histories:
    """One round trip (a read-only script): the blocklist version, then for each distinct
    user of ``batch`` ((user_id, activity score) pairs) the ledger over the batch's
    ``history_bounds``, indexed (``HistoryIndex``: each member's amount converted once,
    each transaction's windows found by binary search). A second round trip (a pipeline
    of ZCOUNTs) counts the windows of users whose ledger was read capped.

    With a ``cache``, users whose ledger it holds get only the members added since."""
    users: list[str] = []
    lower = upper = lowest = 0
    if rules.velocity.windows and batch:
        # One range for the whole batch: a batch spans moments, windows span minutes to
        # days, so the superset costs next to nothing and saves an argument pair per user.
        lower, upper = history_bounds([score for _, score in batch], rules)
        lowest = min(score for _, score in batch)
        users = list(dict.fromkeys(user_id for user_id, _ in batch))
    keys = [activity_key(settings, u) for u in users]
    sent: dict[int, _Held] = {}
    known: list[Known] = []
    if cache is not None and users:
        for i, user_id in enumerate(users):
            held = cache.lookup(user_id, lower, lowest, rules)
            if held is not None:
                sent[i] = held
                since = max(lower, held.lower)
                known.append(
                    Known(i, held.upper, since, held.index.count_above(since), held.capped)
                )
    reply = await scripts.read_ledgers(
        version_key(settings), keys, lower, upper, lowest, SUM_CAP, known
    )
    by_user: dict[str, HistoryIndex | ValueError] = {}
    capped_users = {users[i] for i in reply.capped}
    short = set(reply.short)
    for i, (user_id, flat) in enumerate(zip(users, reply.ledgers, strict=True)):
        pairs = iter(flat)
        try:
            if len(flat) == 2:
                history = [_parse(flat[0], flat[1])]
            else:
                history = [_decode(m, s) for m, s in zip(pairs, pairs, strict=True)]
        except (ValueError, ArithmeticError) as e:  # not in `txn_id|amount|currency` form
            by_user[user_id] = ValueError(f"activity ledger of {user_id!r} is corrupt: {e}")
            if cache is not None:
                cache.drop(user_id)
            continue
        if i in short:
            held = sent[i]
            newer: list[_Entry] = []
            if upper > held.upper:
                # Another batch may have extended it meanwhile: add only what is above.
                newer = [h for h in history if h.score > held.upper]
                held.index.extend(newer)
                held.upper = upper
            assert cache is not None
            cache.used(user_id, held, len(newer))
            by_user[user_id] = held.index
            if held.capped:
                capped_users.add(user_id)
            continue
        if user_id in capped_users:
            index = by_user[user_id] = HistoryIndex(history, rules, sum_cap=SUM_CAP)
            if cache is not None:
                # All members above the oldest read are in; if fewer than SUM_CAP were at
                # or below the batch, everything above `lower` was.
                older = index.size - index.count_above(lowest)
                since = lower if older < SUM_CAP else index.score_at(0)
                cache.keep(user_id, _Held(index, since, upper, capped=True), stale=i in sent)
            continue
        index = by_user[user_id] = HistoryIndex(history, rules)
        if cache is not None and (index.size >= cache.min_entries or i in sent):
            cache.keep(user_id, _Held(index, lower, upper, capped=False), stale=i in sent)
    counts: dict[tuple[str, int], list[int]] = {}
    if capped_users:
        counts = await _count_windows(redis, settings, rules, batch, capped_users)
    return Histories(by_user, int(reply.version) if reply.version is not None else 0, counts)


async def _count_windows(
    redis: Redis,
    settings: Settings,
    rules: RuleSettings,
    batch: Sequence[tuple[str, int]],
    users: set[str],
) -> dict[tuple[str, int], list[int]]:
    """The exact count of every window of each transaction of ``users`` in ``batch``."""
    wanted = list(dict.fromkeys((u, score) for u, score in batch if u in users))
    windows = rules.velocity.windows
    async with redis.pipeline(transaction=False) as pipe:
        for user_id, score in wanted:
            key = activity_key(settings, user_id)
            for window in windows:
                pipe.zcount(key, f"({window_start(score, window.window_s)}", score)
        replies = await pipe.execute()
    n = len(windows)
    return {pair: [int(c) for c in replies[i * n : (i + 1) * n]] for i, pair in enumerate(wanted)}


def facts_for(
    histories: Histories, user_id: str, score: int, rules: RuleSettings
) -> Facts | ValueError:
    """The facts for one transaction of the batch, or the reason they can't be had."""
    if not rules.velocity.windows:
        return NO_FACTS
    index = histories.by_user[user_id]
    if isinstance(index, ValueError):
        return index
    return Facts(velocity=index.stats(score, histories.counts.get((user_id, score))))
