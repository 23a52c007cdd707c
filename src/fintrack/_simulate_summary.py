"""The summary ``fintrack simulate`` prints: counts, latency percentiles, fraud caught."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence

import msgspec

from fintrack._simulate_sender import SendResult
from fintrack._simulate_traffic import PATTERNS

CAUGHT = frozenset({"FLAGGED", "BLOCKED"})
ACCEPTED_CODES = frozenset({200, 202})


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    """POST latency percentiles in milliseconds, measured from each request's due time."""

    p50: float
    p95: float
    p99: float
    max: float


class PatternSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One traffic pattern: transactions sent/accepted/decided/caught (FLAGGED or BLOCKED),
    and incidents (a velocity burst is one incident of many transactions) sent/caught —
    an incident counts as caught when any of its transactions was."""

    sent: int = 0
    accepted: int = 0
    decided: int = 0
    caught: int = 0
    incidents: int = 0
    incidents_caught: int = 0


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one simulation run (``--json`` prints exactly this)."""

    url: str
    seed: int
    target_rate: float
    sent: int
    accepted: int
    rejected: dict[str, int]  # HTTP status code → count
    failed: dict[str, int]  # transport error type → count
    decided: dict[str, int]  # final status → count
    undecided: int
    elapsed_s: float
    observed_rate: float
    latency_ms: Latency | None
    settle_s: float
    patterns: dict[str, PatternSummary]
    warnings: list[str]

    @property
    def ok(self) -> bool:
        """Every accepted transaction was decided (and something was accepted)."""
        return self.undecided == 0 and (self.accepted > 0 or self.sent == 0)


def summarize(
    *,
    url: str,
    seed: int,
    rate: float,
    result: SendResult,
    statuses: Mapping[uuid.UUID, str],
    settle_s: float,
    warnings: Sequence[str] = (),
) -> Summary:
    """Fold the send outcomes and final statuses into a ``Summary``."""
    rejected: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    decided: Counter[str] = Counter()
    per_pattern: dict[str, Counter[str]] = {p: Counter() for p in PATTERNS}
    incidents: dict[str, set[int]] = {p: set() for p in PATTERNS}
    caught_incidents: dict[str, set[int]] = {p: set() for p in PATTERNS}
    accepted = 0
    for txn, outcome in zip(result.txns, result.outcomes, strict=True):
        counts = per_pattern[txn.pattern]
        counts["sent"] += 1
        incidents[txn.pattern].add(txn.incident)
        if outcome.error is not None:
            failed[outcome.error] += 1
            continue
        if outcome.status_code not in ACCEPTED_CODES:
            rejected[str(outcome.status_code)] += 1
            continue
        accepted += 1
        counts["accepted"] += 1
        status = statuses.get(txn.txn_id)
        if status is None:
            continue
        decided[status] += 1
        counts["decided"] += 1
        if status in CAUGHT:
            counts["caught"] += 1
            caught_incidents[txn.pattern].add(txn.incident)
    latencies = sorted(o.latency_ms for o in result.outcomes)
    sent = len(result.outcomes)
    return Summary(
        url=url,
        seed=seed,
        target_rate=rate,
        sent=sent,
        accepted=accepted,
        rejected=dict(sorted(rejected.items())),
        failed=dict(sorted(failed.items())),
        decided=dict(sorted(decided.items())),
        undecided=accepted - sum(decided.values()),
        elapsed_s=round(result.elapsed_s, 3),
        observed_rate=round(sent / result.elapsed_s, 1) if result.elapsed_s > 0 else 0.0,
        latency_ms=_latency(latencies) if latencies else None,
        settle_s=round(settle_s, 3),
        patterns={
            p: PatternSummary(
                sent=per_pattern[p]["sent"],
                accepted=per_pattern[p]["accepted"],
                decided=per_pattern[p]["decided"],
                caught=per_pattern[p]["caught"],
                incidents=len(incidents[p]),
                incidents_caught=len(caught_incidents[p]),
            )
            for p in PATTERNS
        },
        warnings=list(warnings),
    )


def _latency(ordered: Sequence[float]) -> Latency:
    def rank(q: float) -> float:
        # Nearest-rank percentile: a value that was actually observed.
        return round(ordered[max(math.ceil(q * len(ordered)) - 1, 0)], 2)

    return Latency(p50=rank(0.50), p95=rank(0.95), p99=rank(0.99), max=round(ordered[-1], 2))


def render_text(summary: Summary) -> str:
    """The summary as a short human-readable report."""

    def counts(table: Mapping[str, int]) -> str:
        return ", ".join(f"{k}: {v}" for k, v in table.items()) or "none"

    lines = [
        f"api           {summary.url}  (seed {summary.seed})",
        f"sent          {summary.sent} in {summary.elapsed_s:.1f} s "
        f"({summary.observed_rate} txn/s, target {summary.target_rate:g})",
        f"accepted      {summary.accepted}",
        f"rejected      {counts(summary.rejected)}",
        f"failed        {counts(summary.failed)}",
        f"decided       {sum(summary.decided.values())} ({counts(summary.decided)}) "
        f"within {summary.settle_s:.1f} s after sending",
        f"undecided     {summary.undecided}",
    ]
    if summary.latency_ms is not None:
        lat = summary.latency_ms
        lines.append(f"latency (ms)  p50 {lat.p50}  p95 {lat.p95}  p99 {lat.p99}  max {lat.max}")
    lines += [
        "",
        f"{'pattern':<20}{'sent':>8}{'caught':>8}{'incidents':>11}{'caught':>8}",
    ]
    for name, p in summary.patterns.items():
        lines.append(f"{name:<20}{p.sent:>8}{p.caught:>8}{p.incidents:>11}{p.incidents_caught:>8}")
    lines.append("(caught = FLAGGED or BLOCKED; for normal traffic that is a false positive)")
    return "\n".join(lines)
