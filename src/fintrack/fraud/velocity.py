"""Velocity figures from a user's activity ledger (pure: the worker fetches the ledger).

Windows are measured in event time: an activity's score is its position in the
transactions stream (see ``core.activity``), never the worker's clock, so a transaction
redelivered an hour later, or decided by another worker, gets the same figures.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Protocol

from fintrack.core.activity import Activity, window_start
from fintrack.fraud.facts import WindowStats
from fintrack.fraud.settings import (
    EXACT,
    RuleSettings,
    exact_sum,
    to_base_or_none,
)

# The most ledger entries a window's amount sums (the newest; counts stay exact). A user
# with more in a window is an account like "anonymous" or an aggregator: reading its whole
# day of history for every batch would cost more than all the other users together.
SUM_CAP = 1_000


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


class Priced(Protocol):
    """What the velocity figures need of a ledger entry (``core.activity.Activity`` has it)."""

    @property
    def score(self) -> int: ...
    @property
    def amount(self) -> Decimal: ...
    @property
    def currency(self) -> str: ...


class HistoryIndex:
    """One user's ledger, sorted once, answering ``window_stats`` for many scores.

    For a batch with many transactions of one busy user: each lookup is two binary
    searches per window over prefix sums, instead of a pass over the whole history; each
    entry's amount is converted to the base currency once.

    ``sum_cap``: sum at most the newest ``sum_cap`` entries of a window (the rest are
    reported as ``unsummed``). For a ledger read with that cap (``fraud._history``), pass
    the windows' exact counts to ``stats``: the index then only holds the newest entries.
    """

    __slots__ = ("_amounts", "_base", "_cap", "_rates", "_scores", "_unpriced", "_windows")

    def __init__(
        self, history: Sequence[Priced], settings: RuleSettings, *, sum_cap: int | None = None
    ) -> None:
        self._windows, self._base, self._rates = _layout(settings)
        self._cap = sum_cap
        self._scores: list[int] = []
        # Prefix sums: entry i holds the totals of the first i activities.
        self._amounts = [_ZERO]
        self._unpriced = [0]
        if len(history) > 1:
            self._append(sorted(history, key=_by_score))
        elif history:
            self._append(history)

    @property
    def size(self) -> int:
        """How many ledger entries the index holds."""
        return len(self._scores)

    def score_at(self, position: int) -> int:
        """The score of the entry at ``position`` (0: the oldest)."""
        return self._scores[position]

    def count_above(self, score: int) -> int:
        """How many of the entries have a score above ``score``."""
        return len(self._scores) - bisect_right(self._scores, score)

    def extend(self, newer: Sequence[Priced]) -> None:
        """Add entries scored above every entry held (in any order among themselves)."""
        self._append(sorted(newer, key=_by_score) if len(newer) > 1 else newer)

    def without_below(self, score: int) -> HistoryIndex:
        """A copy without the entries scored at or below ``score`` (same figures above it)."""
        first = bisect_right(self._scores, score)
        copy = HistoryIndex.__new__(HistoryIndex)
        copy._windows = self._windows
        copy._cap = self._cap
        copy._base = self._base
        copy._rates = self._rates
        copy._scores = self._scores[first:]
        copy._amounts = self._amounts[first:]  # differences of prefix sums are unchanged
        copy._unpriced = self._unpriced[first:]
        return copy

    def _append(self, ordered: Iterable[Priced]) -> None:
        # to_base_or_none and exact_add inlined: this runs once per ledger entry read.
        base = self._base
        rates = self._rates
        multiply = EXACT.multiply
        add = EXACT.add
        scores = self._scores
        amounts = self._amounts
        unpriced = self._unpriced
        total = amounts[-1]
        missing = unpriced[-1]
        for a in ordered:
            scores.append(a.score)
            currency = a.currency
            if currency == base:
                total = add(total, a.amount)
            else:
                rate = rates.get(currency)
                if rate is None:
                    missing += 1
                else:
                    total = add(total, multiply(a.amount, rate))
            amounts.append(total)
            unpriced.append(missing)

    def stats(self, score: int, counts: Sequence[int] | None = None) -> tuple[WindowStats, ...]:
        """The same figures as ``window_stats(history, score, settings)`` (without a cap).

        ``counts``: the exact count of each window (in the settings' order), when the
        index may lack a window's oldest entries."""
        scores = self._scores
        amounts = self._amounts
        unpriced = self._unpriced
        cap = self._cap
        subtract = EXACT.subtract
        hi = bisect_right(scores, score)
        result: list[WindowStats] = []
        for i, (window_s, offset) in enumerate(self._windows):
            first = bisect_right(scores, score + offset)
            count = hi - first if counts is None else counts[i]
            if cap is not None and hi - first > cap:
                first = hi - cap  # sum the newest only
            result.append(
                WindowStats(
                    window_s,
                    count,
                    subtract(amounts[hi], amounts[first]),
                    unpriced[hi] - unpriced[first],
                    max(count - (hi - first), 0),
                )
            )
        return tuple(result)


_by_score = attrgetter("score")  # C: the sort key of every ledger entry read
_ZERO = Decimal(0)
_Layout = tuple[list[tuple[int, int]], str, dict[str, Decimal]]
_last_layout: tuple[RuleSettings, _Layout] | None = None


def _layout(settings: RuleSettings) -> _Layout:
    """What an index needs of ``settings``: the windows as (window_s, offset) pairs (a
    window ending at score s starts, exclusive, at s + offset), the base currency, the
    rates. Kept for the settings in force: a batch builds an index per user."""
    global _last_layout  # a one-entry cache: the settings in force rarely change
    if _last_layout is not None and _last_layout[0] is settings:
        return _last_layout[1]
    windows = [(w.window_s, window_start(0, w.window_s)) for w in settings.velocity.windows]
    layout = (windows, settings.base_currency, settings.rates)
    _last_layout = (settings, layout)
    return layout


def history_bounds(scores: Sequence[int], settings: RuleSettings) -> tuple[int, int]:
    """The score range ``(lower, upper]`` of one user's ledger that covers every window of
    every transaction in a batch with these activity ``scores``.

    ``lower`` is exclusive, ``upper`` inclusive (the batch's last score). Raises
    ``ValueError`` for an empty batch."""
    if not scores:
        raise ValueError("history_bounds needs at least one score")
    longest = max((w.window_s for w in settings.velocity.windows), default=0)
    return window_start(min(scores), longest), max(scores)
