"""`fintrack lag`: the workers' backlog from XINFO GROUPS, as JSON or CloudWatch EMF."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from conftest import free_port, wait_until
from fintrack.config import Settings
from fintrack.core.streams import TXN_GROUP, ensure_group
from fintrack.lag import GroupLag, read_lag


def lag_cli(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fintrack", "lag", *args],
        env={**os.environ, **settings.to_env(), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


async def test_lag_counts_undelivered_and_pending(settings: Settings, redis_client: Redis) -> None:
    """No stream: nothing waits; no group yet: every entry waits; then lag = undelivered and
    pending = delivered but unacked."""
    stream = settings.txn_stream
    assert await read_lag(redis_client, stream) == GroupLag(stream, TXN_GROUP, 0, 0)

    for n in range(5):
        await redis_client.xadd(stream, {"n": str(n)})
    assert await read_lag(redis_client, stream) == GroupLag(stream, TXN_GROUP, 5, 0)

    await ensure_group(redis_client, stream, TXN_GROUP)
    delivered = await redis_client.xreadgroup(TXN_GROUP, "w1", {stream: ">"}, count=2)
    assert await read_lag(redis_client, stream) == GroupLag(stream, TXN_GROUP, 3, 2)

    first_id = delivered[0][1][0][0]
    await redis_client.xack(stream, TXN_GROUP, first_id)
    assert await read_lag(redis_client, stream) == GroupLag(stream, TXN_GROUP, 3, 1)


async def test_lag_is_counted_when_redis_cannot_tell(
    settings: Settings, redis_client: Redis
) -> None:
    """After an XDEL past the group's position XINFO reports no lag; the entries still
    undelivered are counted instead."""
    stream = settings.txn_stream
    await ensure_group(redis_client, stream, TXN_GROUP)
    ids = [await redis_client.xadd(stream, {"n": str(n)}) for n in range(4)]
    await redis_client.xreadgroup(TXN_GROUP, "w1", {stream: ">"}, count=1)
    await redis_client.xdel(stream, ids[2])
    groups = await redis_client.xinfo_groups(stream)
    assert groups[0]["lag"] is None  # the case being tested
    assert await read_lag(redis_client, stream) == GroupLag(stream, TXN_GROUP, 2, 1)


def test_emf_line_is_a_cloudwatch_metric() -> None:
    """The EMF line declares StreamLag and PendingEntries in the namespace, with the Stream and
    Group dimensions and the values as top-level members."""
    line = GroupLag("fintrack:txns", TXN_GROUP, 42, 7).to_emf("FinTrack", timestamp_ms=1_700_000)
    doc = json.loads(line)
    directive = doc["_aws"]["CloudWatchMetrics"][0]
    assert doc["_aws"]["Timestamp"] == 1_700_000
    assert directive["Namespace"] == "FinTrack"
    assert directive["Dimensions"] == [["Stream", "Group"]]
    assert [m["Name"] for m in directive["Metrics"]] == ["StreamLag", "PendingEntries"]
    assert doc["Stream"] == "fintrack:txns"
    assert doc["Group"] == TXN_GROUP
    assert doc["StreamLag"] == 42
    assert doc["PendingEntries"] == 7
    assert "\n" not in line


async def test_lag_command_prints_one_json_line(settings: Settings, redis_client: Redis) -> None:
    """`fintrack lag` prints {"stream","group","lag","pending"} for settings.txn_stream."""
    for n in range(3):
        await redis_client.xadd(settings.txn_stream, {"n": str(n)})
    result = lag_cli(settings)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "stream": settings.txn_stream,
        "group": TXN_GROUP,
        "lag": 3,
        "pending": 0,
    }

    emf = lag_cli(settings, "--cloudwatch-namespace", "FinTrack/Test")
    assert emf.returncode == 0, emf.stderr
    assert json.loads(emf.stdout)["StreamLag"] == 3


def test_lag_command_fails_when_redis_is_unreachable(settings: Settings) -> None:
    """Without Redis a single reading exits 1 with a one-line reason, no traceback."""
    result = lag_cli(settings, FINTRACK_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"cannot read lag of {settings.txn_stream}: ")
    assert "Traceback" not in result.stderr


def test_lag_watch_publishes_until_sigterm(settings: Settings, tmp_path: Path) -> None:
    """--watch keeps printing readings and exits 0 promptly on SIGTERM (a sidecar's stop)."""
    out = tmp_path / "lag.out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fintrack", "lag", "--watch", "1"],
            env={**os.environ, **settings.to_env()},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: len(out.read_text().splitlines()) >= 2, 15, "two lag readings")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    readings = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["stream"] == settings.txn_stream and r["lag"] == 0 for r in readings)
