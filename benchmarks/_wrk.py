"""Closed-loop HTTP load with wrk (Debian package ``wrk``) and ``wrk/post.lua``."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path
from typing import Any

from benchmarks._procs import BenchError

SCRIPT = Path(__file__).parent / "wrk" / "post.lua"


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    *,
    duration_s: float,
    connections: int,
    threads: int = 2,
    batch_items: int = 0,
    timeout_s: float = 5.0,
) -> dict[str, Any]:
    """POST to ``url`` for ``duration_s``; requests/s, latency percentiles (ms), errors."""
    if not wrk_available():
        raise BenchError("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    nonce = secrets.randbits(31)
    argv = [
        "wrk", f"-t{min(threads, connections)}", f"-c{connections}",
        f"-d{max(1, round(duration_s))}s", f"--timeout={timeout_s:g}s",
        "-s", str(SCRIPT), url, "--", str(nonce), str(batch_items),
    ]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    seconds = raw["duration_us"] / 1e6
    errors = sum(
        raw[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    ok = raw["requests"] - raw["status_errors"]
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 3),
        "req_per_s": round(ok / seconds, 1),
        "txn_per_s": round(ok * max(batch_items, 1) / seconds, 1),
        "latency_ms": {
            "p50": raw["p50_us"] / 1000,
            "p90": raw["p90_us"] / 1000,
            "p95": raw["p95_us"] / 1000,
            "p99": raw["p99_us"] / 1000,
            "max": raw["max_us"] / 1000,
            "mean": round(raw["mean_us"] / 1000, 3),
        },
        "errors": errors,
        "error_detail": {
            k: raw[k]
            for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
            if raw[k]
        },
        "connections": connections,
    }
