"""Percentiles and the small numeric helpers the scenarios share."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0-100) of already sorted values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max (and the count) of values in milliseconds, rounded to µs."""
    ordered = sorted(values)
    out = {f"p{q}": percentile(ordered, q) for q in (50, 95, 99)}
    out["max"] = ordered[-1] if ordered else math.nan
    return {**{k: round(v, 3) for k, v in out.items()}, "n": len(ordered)}


def ratio(ours: float | None, reference: float | None) -> float | None:
    if not ours or not reference or math.isnan(ours) or math.isnan(reference):
        return None
    return round(ours / reference, 2)


def mib(n_bytes: float) -> float:
    return round(n_bytes / 1_048_576, 1)
