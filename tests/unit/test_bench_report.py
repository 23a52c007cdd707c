"""The benchmark report: ratios only between two measured, finite figures; the e2e
targets at the rates they are set for, the stretch on the sustained run."""

from __future__ import annotations

import math

import pytest
from benchmarks._report import Row
from benchmarks.scenarios import e2e


@pytest.mark.parametrize(
    ("ours", "reference", "ratio"),
    [
        (42.0, 84.0, 0.5),
        (42.0, math.inf, None),  # the reference never decided some transactions
        (math.inf, 42.0, None),
        (math.nan, 42.0, None),
        (42.0, 0.0, None),
        (42.0, None, None),
    ],
)
def test_ratio(ours: float, reference: float | None, ratio: float | None) -> None:
    assert Row("e2e", "p99", "ms", ours, reference).ratio == ratio


def _e2e_figures(commit_p99: float, sse_p99: float) -> dict[str, object]:
    ms = {"p50": 1.0, "p99": 2.0}
    return {
        "decided_per_s": 1.0,
        "submit_to_202_ms": ms,
        "submit_to_commit_ms": ms,
        "submit_to_commit_published_ms": {"p50": 1.0, "p99": commit_p99},
        "submit_to_sse_ms": {"p50": 1.0, "p99": sse_p99},
        "submit_to_commit_p99_ms_by_second": [3.0, 7.5, 4.0],
    }


@pytest.mark.parametrize(
    ("rate", "commit_p99", "sse_p99", "commit_target", "commit_met", "sse_target", "sse_met"),
    [
        (500, 99.0, 99.0, "", None, "", None),  # no target at 500/s
        (1000, 20.0, 50.0, "<= 20", True, "<= 50", True),
        (1000, 20.1, 50.1, "<= 20", False, "<= 50", False),
        (3000, 99.0, 99.0, "", None, "", None),  # the stretch is for the sustained run
    ],
)
def test_e2e_targets_by_rate(
    rate: int,
    commit_p99: float,
    sse_p99: float,
    commit_target: str,
    commit_met: bool | None,
    sse_target: str,
    sse_met: bool | None,
) -> None:
    """At 1,000/s the commit (published) and SSE targets apply, at no other fixed rate."""
    rows = {
        r.metric: r
        for r in e2e.rate_rows(rate, _e2e_figures(commit_p99, sse_p99), _e2e_figures(1.0, 1.0))
    }
    published = rows[f"{rate}/s submit->commit published p99"]
    sse = rows[f"{rate}/s submit->SSE p99"]
    assert (published.target, published.met) == (commit_target, commit_met)
    assert (sse.target, sse.met) == (sse_target, sse_met)


@pytest.mark.parametrize(
    ("rate", "commit_p99", "target", "met"),
    [
        (3000, 35.0, "<= 35 (stretch)", True),
        (3000, 35.1, "<= 35 (stretch)", False),
        (200, 99.0, "", None),  # a smaller sustained rate (the smoke test's) has no target
    ],
)
def test_the_stretch_is_judged_on_the_sustained_run(
    rate: int, commit_p99: float, target: str, met: bool | None
) -> None:
    rows = {r.metric: r for r in e2e.sustained_rows(rate, 60, 100_000, _e2e_figures(commit_p99, 1))}
    at = f"{rate}/s sustained 60 s, 100,000 users:"
    published = rows[f"{at} submit->commit published p99"]
    assert (published.target, published.met) == (target, met)
    assert rows[f"{at} worst second's submit->commit p99"].ours == 7.5
