"""Results: one row per measured figure, printed as a table and written as JSON."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One figure: ours, the reference's, their ratio, and the target if there is one."""

    scenario: str
    metric: str
    unit: str
    ours: float | None
    reference: float | None = None
    target: str = ""
    met: bool | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.ours is None or self.reference is None or not self.reference:
            return None
        # inf: the reference never got there (some transactions undecided at the end).
        if not (math.isfinite(self.ours) and math.isfinite(self.reference)):
            return None
        return round(self.ours / self.reference, 4)


@dataclass
class ScenarioResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ms":
        return f"{value:,.2f}"
    if unit == "KiB":
        return f"{value:,.1f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def render_table(results: list[ScenarioResult]) -> str:
    """A fixed-width table of every row, with a ✓/✗ column for targets."""
    header = ("scenario", "metric", "unit", "ours", "reference", "ratio", "target", "met")
    lines = [header]
    for result in results:
        if result.error:
            lines.append((result.name, f"FAILED: {result.error[:60]}", "", "", "", "", "", ""))
        for r in result.rows:
            met = "" if r.met is None else ("yes" if r.met else "NO")
            ratio = r.ratio
            lines.append(
                (
                    r.scenario,
                    r.metric,
                    r.unit,
                    _fmt(r.ours, r.unit),
                    _fmt(r.reference, r.unit),
                    "" if ratio is None else f"{ratio:.3g}x",
                    r.target,
                    met,
                )
            )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    right = {3, 4, 5}
    out = []
    for n, line in enumerate(lines):
        cells = [
            str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i])
            for i, c in enumerate(line)
        ]
        out.append("  ".join(cells).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


_PACKAGES = (
    "fintrack-sentinel",
    "granian",
    "litestar",
    "msgspec",
    "redis",
    "psycopg",
    "fastapi",
    "uvicorn",
    "pydantic",
    "uvloop",
)


def render_markdown(document: dict[str, Any]) -> str:
    """The rows of a written JSON report as a Markdown table (for docs/performance.md)."""
    lines = [
        "| scenario | metric | unit | ours | reference | ratio | target | met |",
        "|---|---|---|--:|--:|--:|---|---|",
    ]
    for name, scenario in document["scenarios"].items():
        if scenario["error"]:
            lines.append(f"| {name} | FAILED: {scenario['error']} | | | | | | |")
        for r in scenario["rows"]:
            met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.3g}x"
            ours, ref = _fmt(r["ours"], r["unit"]), _fmt(r["reference"], r["unit"])
            lines.append(
                f"| {r['scenario']} | {r['metric']} | {r['unit']} | {ours} | {ref} | {ratio} "
                f"| {r['target']} | {met} |"
            )
    return "\n".join(lines)


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "-"


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_kib / 1_048_576, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "packages": {name: _package(name) for name in _PACKAGES},
    }


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(
    out_dir: Path, results: list[ScenarioResult], meta: dict[str, Any], started: float
) -> Path:
    """bench-results/<timestamp>.json with the machine, options, rows and details."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = out_dir / f"{stamp}.json"
    document = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.time() - started, 1),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        **meta,
        "machine": machine(),
        "scenarios": {
            r.name: {
                "error": r.error,
                "rows": [{**asdict(row), "ratio": row.ratio} for row in r.rows],
                "detail": r.detail,
            }
            for r in results
        },
    }
    cleaned = _clean(document)
    path.write_text(json.dumps(cleaned, indent=2) + "\n")
    path.with_suffix(".md").write_text(render_markdown(cleaned) + "\n")
    return path
