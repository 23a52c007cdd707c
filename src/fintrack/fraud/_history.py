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
from fintrack.fraud._scripts import Scripts
from fintrack.fraud.facts import Facts
from fintrack.fraud.settings import RuleSettings
from fintrack.fraud.velocity import SUM_CAP, HistoryIndex, history_bounds

NO_FACTS = Facts()


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


async def fetch_histories(
    scripts: Scripts,
    redis: Redis,
    settings: Settings,
    rules: RuleSettings,
    batch: Sequence[tuple[str, int]],
) -> Histories:
    """One round trip (a read-only script): the blocklist version, then for each distinct
    user of ``batch`` ((user_id, activity score) pairs) the ledger over the batch's
    ``history_bounds``, indexed (``HistoryIndex``: each member's amount converted once,
    each transaction's windows found by binary search). A second round trip (a pipeline
    of ZCOUNTs) counts the windows of users whose ledger was read capped."""
    users: list[str] = []
    lower = upper = lowest = 0
    if rules.velocity.windows and batch:
        # One range for the whole batch: a batch spans moments, windows span minutes to
        # days, so the superset costs next to nothing and saves an argument pair per user.
        lower, upper = history_bounds([score for _, score in batch], rules)
        lowest = min(score for _, score in batch)
        users = list(dict.fromkeys(user_id for user_id, _ in batch))
    keys = [activity_key(settings, u) for u in users]
    raw_version, replies, capped = await scripts.read_ledgers(
        version_key(settings), keys, lower, upper, lowest, SUM_CAP
    )
    by_user: dict[str, HistoryIndex | ValueError] = {}
    capped_users = {users[i] for i in capped}
    for user_id, flat in zip(users, replies, strict=True):
        pairs = iter(flat)
        try:
            if len(flat) == 2:
                history = [_parse(flat[0], flat[1])]
            else:
                history = [_decode(m, s) for m, s in zip(pairs, pairs, strict=True)]
        except (ValueError, ArithmeticError) as e:  # not in `txn_id|amount|currency` form
            by_user[user_id] = ValueError(f"activity ledger of {user_id!r} is corrupt: {e}")
            continue
        cap = SUM_CAP if user_id in capped_users else None
        by_user[user_id] = HistoryIndex(history, rules, sum_cap=cap)
    counts: dict[tuple[str, int], list[int]] = {}
    if capped_users:
        counts = await _count_windows(redis, settings, rules, batch, capped_users)
    return Histories(by_user, int(raw_version) if raw_version is not None else 0, counts)


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
