"""Smoke test of the benchmark suite: every scenario runs in a tiny bounded mode and
reports what it should. Numbers are not checked against targets here (timed assertions
on a shared machine would be flaky); docs/performance.md has the real figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ("ingest", "batch", "worker", "e2e", "fanout", "connections")
TINY = [
    "--duration", "1", "--connections", "16", "--batch-items", "100",
    "--batch-connections", "2", "--e2e-rates", "200", "--fanout-clients", "20",
    "--fanout-rate", "50", "--idle-connections", "100", "--sse-clients", "40",
    "--worker-count", "2000", "--sustained-s", "1", "--sustained-rate", "300",
    "--sustained-users", "1000",
]  # fmt: skip

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny run of every scenario through `fintrack bench`; its JSON report."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "fintrack", "bench", *TINY, "--out", str(out)],
        cwd=ROOT / "src",  # `fintrack bench` finds the checkout from any directory in it
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    files = list(out.glob("*.json"))
    assert len(files) == 1, f"no report (exit {done.returncode}):\n{done.stderr[-3000:]}"
    document: dict[str, Any] = json.loads(files[0].read_text())
    document["_stdout"] = done.stdout
    document["_returncode"] = done.returncode
    return document


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_reports_throughput_and_reference(report: dict[str, Any], name: str) -> None:
    """Each scenario runs without error and reports positive figures for ours and the
    reference where it has one."""
    scenario = report["scenarios"][name]
    assert scenario["error"] is None
    rows = scenario["rows"]
    assert rows
    for row in rows:
        assert {"metric", "unit", "ours", "reference", "ratio", "target", "met"} <= row.keys()
        assert row["ours"] is not None, row
        if row["unit"] != "KiB":  # an RSS delta of a few connections may round to nothing
            assert row["ours"] > 0, row
    first = rows[0]
    assert first["unit"] in ("req/s", "txn/s", "ev/s")
    assert first["reference"] is not None
    assert first["reference"] > 0


def test_sustained_run_takes_and_decides_its_realistic_traffic(report: dict[str, Any]) -> None:
    """The sustained e2e run's bodies (``worker_bench.traffic``: five currencies, the
    default user sent as no user_id) are all accepted by the api and all decided."""
    sustained = report["scenarios"]["e2e"]["detail"]["sustained"]
    assert (sustained["rate"], sustained["seconds"], sustained["users"]) == (300, 1, 1000)
    ours = sustained["ours"]
    assert ours["sent"] > 200
    assert ours["accepted"] == ours["sent"]
    assert ours["decided"] == ours["accepted"]
    assert ours["sse_received"] == ours["accepted"]


def test_report_prints_table_and_cleans_up(report: dict[str, Any]) -> None:
    """The run exits 0, prints the table, and leaves no database or Redis key behind."""
    assert report["_returncode"] == 0
    assert "scenario" in report["_stdout"]
    assert "written:" in report["_stdout"]
    assert report["machine"]["cpus"] >= 1
    run_id = report["run_id"]
    if "the machine's" in report["services"]:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres") as conn:
            left = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s",
                (f"fintrack_bench_{run_id}%",),
            ).fetchall()
        assert left == []
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        try:
            assert list(client.scan_iter(match=f"{report['key_prefix']}:*", count=1000)) == []
        finally:
            client.close()
