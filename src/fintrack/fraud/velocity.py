"""Velocity figures from a user's activity ledger (pure: the worker fetches the ledger).

Windows are measured in event time: an activity's score is its position in the
transactions stream (see ``core.activity``), never the worker's clock, so a transaction
redelivered an hour later, or decided by another worker, gets the same figures.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from decimal import Decimal

from fintrack.core.activity import Activity, window_start
from fintrack.fraud.facts import WindowStats
from fintrack.fraud.settings import RuleSettings, exact_difference, exact_sum, to_base_or_none


def window_stats(
    history: Sequence[Activity], score: int, settings: RuleSettings
) -> tuple[WindowStats, ...]:
    """For each configured window, the user's count and base-currency total of activities
    with ``window_start(score, window_s) < a.score <= score``.

    ``history`` may be in any order and hold entries outside every window (later ones
    included); the transaction being decided is counted if it is in ``history``, which is
    the case when the api recorded it. Each entry is one transaction (the ledger is a set).
    """
    stats: list[WindowStats] = []
    for window in settings.velocity.windows:
        lower = window_start(score, window.window_s)
        count = 0
        unpriced = 0
        amounts: list[Decimal] = []
        for a in history:
            if lower < a.score <= score:
                count += 1
                converted = to_base_or_none(a.amount, a.currency, settings)
                if converted is None:
                    unpriced += 1
                else:
                    amounts.append(converted)
        stats.append(WindowStats(window.window_s, count, exact_sum(amounts), unpriced))
    return tuple(stats)


class HistoryIndex:
    """One user's ledger, sorted once, answering ``window_stats`` for many scores.

    For a batch with many transactions of one busy user: each lookup is two binary
    searches per window over prefix sums, instead of a pass over the whole history.
    """

    __slots__ = ("_amounts", "_scores", "_settings", "_unpriced")

    def __init__(self, history: Sequence[Activity], settings: RuleSettings) -> None:
        ordered = sorted(history, key=lambda a: a.score)
        self._settings = settings
        self._scores = [a.score for a in ordered]
        # Prefix sums: entry i holds the totals of the first i activities.
        self._amounts = [Decimal(0)]
        self._unpriced = [0]
        for a in ordered:
            converted = to_base_or_none(a.amount, a.currency, settings)
            total = self._amounts[-1]
            self._amounts.append(total if converted is None else exact_sum([total, converted]))
            self._unpriced.append(self._unpriced[-1] + (converted is None))

    def stats(self, score: int) -> tuple[WindowStats, ...]:
        """The same figures as ``window_stats(history, score, settings)``."""
        hi = bisect_right(self._scores, score)
        result: list[WindowStats] = []
        for window in self._settings.velocity.windows:
            lo = bisect_right(self._scores, window_start(score, window.window_s))
            result.append(
                WindowStats(
                    window.window_s,
                    hi - lo,
                    exact_difference(self._amounts[hi], self._amounts[lo]),
                    self._unpriced[hi] - self._unpriced[lo],
                )
            )
        return tuple(result)


def history_bounds(scores: Sequence[int], settings: RuleSettings) -> tuple[int, int]:
    """The score range ``(lower, upper]`` of one user's ledger that covers every window of
    every transaction in a batch with these activity ``scores``.

    ``lower`` is exclusive, ``upper`` inclusive (the batch's last score). Raises
    ``ValueError`` for an empty batch."""
    if not scores:
        raise ValueError("history_bounds needs at least one score")
    longest = max((w.window_s for w in settings.velocity.windows), default=0)
    return window_start(min(scores), longest), max(scores)
