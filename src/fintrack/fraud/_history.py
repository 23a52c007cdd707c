"""Facts for a batch: each user's activity ledger, read in one round trip.

The worker only ever reads the ledger (the api writes it atomically with the enqueue), so
the figures for a transaction depend on its stream position alone, not on which worker
decides it, when, or how many times.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

from fintrack.config import Settings
from fintrack.core.activity import Activity, activity_key, decode_member
from fintrack.core.blocklist import version_key
from fintrack.fraud._scripts import Scripts
from fintrack.fraud.facts import Facts
from fintrack.fraud.settings import RuleSettings
from fintrack.fraud.velocity import history_bounds, window_stats

NO_FACTS = Facts()


# A user's ledger is read again for every batch the user appears in; parsing a member
# (a UUID and a Decimal) costs more than the lookup. Members never change: safe to cache.
# Bounded: 65,536 entries are about 25 MB at most.
@functools.lru_cache(maxsize=1 << 16)
def _decode(member: bytes, score: float) -> Activity:
    return decode_member(member, score)


class Histories(NamedTuple):
    """Per user: the ledger slice covering every window of the batch, or why it could not
    be read (a corrupt member fails that user's transactions, not the batch)."""

    by_user: dict[str, list[Activity] | ValueError]
    blocklist_version: int


async def fetch_histories(
    scripts: Scripts, settings: Settings, rules: RuleSettings, batch: Sequence[tuple[str, int]]
) -> Histories:
    """One round trip (a read-only script): the blocklist version, then for each distinct
    user of ``batch`` ((user_id, activity score) pairs) the ledger over the batch's
    ``history_bounds`` (``window_stats`` picks each transaction's windows out of it)."""
    users: list[str] = []
    lower = upper = 0
    if rules.velocity.windows and batch:
        # One range for the whole batch: a batch spans moments, windows span minutes to
        # days, so the superset costs next to nothing and saves an argument pair per user.
        lower, upper = history_bounds([score for _, score in batch], rules)
        users = list(dict.fromkeys(user_id for user_id, _ in batch))
    raw_version, replies = await scripts.read_ledgers(
        version_key(settings), [activity_key(settings, u) for u in users], lower, upper
    )
    by_user: dict[str, list[Activity] | ValueError] = {}
    for user_id, flat in zip(users, replies, strict=True):
        pairs = iter(flat)
        try:
            by_user[user_id] = [_decode(m, float(s)) for m, s in zip(pairs, pairs, strict=True)]
        except (ValueError, ArithmeticError) as e:  # not in `txn_id|amount|currency` form
            by_user[user_id] = ValueError(f"activity ledger of {user_id!r} is corrupt: {e}")
    return Histories(by_user, int(raw_version) if raw_version is not None else 0)


def facts_for(
    histories: Histories, user_id: str, score: int, rules: RuleSettings
) -> Facts | ValueError:
    """The facts for one transaction of the batch, or the reason they can't be had."""
    if not rules.velocity.windows:
        return NO_FACTS
    history = histories.by_user[user_id]
    if isinstance(history, ValueError):
        return history
    return Facts(velocity=window_stats(history, score, rules))
