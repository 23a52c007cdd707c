"""Velocity figures: windows in event time (activity scores), exact base-currency totals."""

from __future__ import annotations

import uuid
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fintrack.core.activity import Activity, entry_score, window_start
from fintrack.fraud.facts import WindowStats
from fintrack.fraud.settings import RuleSettings, VelocitySettings, VelocityWindow
from fintrack.fraud.velocity import HistoryIndex, history_bounds, window_stats

SPAN_60 = 60 * 1000 * 1000  # 60 s in activity score units (ms * 1000 + seq)
NOW = entry_score("1700000000000-5")


def act(score: int, amount: str = "10.00", currency: str = "USD") -> Activity:
    return Activity(score, uuid.uuid4(), Decimal(amount), currency)


def only(*windows: VelocityWindow) -> RuleSettings:
    return msgspec.structs.replace(RuleSettings(), velocity=VelocitySettings(windows=windows))


ONE_MINUTE = only(VelocityWindow(window_s=60, max_count=5))


def test_window_lower_bound_is_exclusive_and_upper_inclusive() -> None:
    """Exactly a window before is out, just inside is in, this one is in, later ones out."""
    history = [
        act(NOW - SPAN_60, "1"),  # exactly at the lower bound: excluded
        act(NOW - SPAN_60 + 1, "2"),  # just inside
        act(NOW, "4"),  # the transaction itself
        act(NOW + 1, "8"),  # accepted later: excluded
    ]
    assert window_stats(history, NOW, ONE_MINUTE) == (WindowStats(60, 2, Decimal("6")),)


def test_stream_ids_a_window_apart_fall_out() -> None:
    """Event time comes from stream ids: an entry 60 000 ms earlier is outside a 60 s window."""
    history = [
        act(entry_score("1699999940000-5")),  # 60 s before, same sequence: out
        act(entry_score("1699999940000-6")),  # one sequence later: in
        act(entry_score("1699999999999-0")),
        act(NOW),
    ]
    (stats,) = window_stats(history, NOW, ONE_MINUTE)
    assert stats.count == 3


def test_history_order_does_not_matter() -> None:
    """The figures are the same whatever order the ledger is given in."""
    history = [act(NOW - i * 1_000_000, str(i + 1)) for i in range(80)]
    settings = RuleSettings()
    assert window_stats(history, NOW, settings) == window_stats(history[::-1], NOW, settings)


def test_each_window_counts_separately() -> None:
    """A longer window holds what a shorter one does, and more."""
    settings = only(
        VelocityWindow(window_s=60, max_count=5), VelocityWindow(window_s=3600, max_count=9)
    )
    history = [act(NOW), act(NOW - SPAN_60 // 2), act(NOW - SPAN_60 * 30), act(NOW - SPAN_60 * 61)]
    assert [(s.window_s, s.count) for s in window_stats(history, NOW, settings)] == [
        (60, 2),
        (3600, 3),
    ]


def test_amounts_are_converted_exactly() -> None:
    """Totals are in the base currency, with exact Decimal arithmetic."""
    history = [act(NOW, "1000.00", "INR"), act(NOW - 1, "0.10", "USD"), act(NOW - 2, "0.20", "USD")]
    (stats,) = window_stats(history, NOW, ONE_MINUTE)
    assert stats.amount == Decimal("12.30")  # 1000 * 0.012 + 0.10 + 0.20, no float drift


def test_currency_without_rate_is_counted_but_unpriced() -> None:
    """An entry whose currency has no rate counts, stays out of the total, and is reported."""
    history = [act(NOW, "500", "THB"), act(NOW - 1, "7.00", "USD")]
    (stats,) = window_stats(history, NOW, ONE_MINUTE)
    assert stats == WindowStats(60, 2, Decimal("7.00"), unpriced=1)


def test_empty_history_gives_zeros() -> None:
    """No activity: zero count and amount for every configured window."""
    assert window_stats([], NOW, RuleSettings()) == (
        WindowStats(60, 0, Decimal(0)),
        WindowStats(86400, 0, Decimal(0)),
    )


def test_history_bounds_cover_every_window_of_the_batch() -> None:
    """The fetch range starts the longest window before the earliest score, ends at the last."""
    scores = [NOW + 5, NOW, NOW + 9]
    lower, upper = history_bounds(scores, RuleSettings())
    assert (lower, upper) == (window_start(NOW, 86400), NOW + 9)


def test_history_bounds_refuse_an_empty_batch() -> None:
    """An empty batch has no bounds."""
    with pytest.raises(ValueError, match="at least one score"):
        history_bounds([], RuleSettings())


_activities = st.lists(
    st.builds(
        act,
        st.integers(NOW - 2 * SPAN_60, NOW + SPAN_60 // 10),
        st.decimals("0.01", "100000", places=2).map(str),
        st.sampled_from(["USD", "INR", "JPY", "THB"]),
    ),
    max_size=30,
)


@given(history=_activities, offsets=st.lists(st.integers(-SPAN_60, 0), min_size=1, max_size=5))
def test_history_index_agrees_with_window_stats(
    history: list[Activity], offsets: list[int]
) -> None:
    """The sorted prefix-sum index gives exactly what the direct scan gives."""
    settings = only(
        VelocityWindow(window_s=30, max_count=5), VelocityWindow(window_s=60, max_count=5)
    )
    index = HistoryIndex(history, settings)
    for offset in [0, *offsets]:
        score = NOW + offset
        assert index.stats(score) == window_stats(history, score, settings)


def test_history_index_boundaries() -> None:
    """The index, like the scan, excludes the lower bound and later entries."""
    history = [
        act(NOW - SPAN_60, "1"),
        act(NOW - SPAN_60 + 1, "2"),
        act(NOW, "4"),
        act(NOW + 1, "8"),
    ]
    assert HistoryIndex(history, ONE_MINUTE).stats(NOW) == (WindowStats(60, 2, Decimal("6")),)


def test_capped_index_sums_the_newest_and_reports_the_rest() -> None:
    """With a sum cap, a fuller window sums its newest entries; the rest are unsummed."""
    history = [act(NOW - i, str(i + 1)) for i in range(5)]  # amounts 1..5, newest is 1
    (stats,) = HistoryIndex(history, ONE_MINUTE, sum_cap=3).stats(NOW)
    assert stats == WindowStats(60, 5, Decimal("6"), unsummed=2)


def test_capped_index_takes_exact_counts_for_what_it_lacks() -> None:
    """Given the exact count, a capped read (newest entries only) reports it and the gap."""
    newest = [act(NOW - i, "2") for i in range(3)]
    (stats,) = HistoryIndex(newest, ONE_MINUTE, sum_cap=3).stats(NOW, [40])
    assert stats == WindowStats(60, 40, Decimal("6"), unsummed=37)


def test_index_under_its_cap_is_exact() -> None:
    """A window within the cap gives the same figures as the direct scan."""
    history = [act(NOW - i * 1000, "3") for i in range(4)]
    capped = HistoryIndex(history, RuleSettings(), sum_cap=10)
    assert capped.stats(NOW) == window_stats(history, NOW, RuleSettings())
