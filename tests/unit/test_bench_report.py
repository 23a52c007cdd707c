"""The benchmark report's ratios: only between two measured, finite figures."""

from __future__ import annotations

import math

import pytest
from benchmarks._report import Row


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
