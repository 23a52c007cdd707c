"""The garbage collector's settings: start-up's objects frozen once per process, by the
api's and the notifier's lifespans (the worker settles before its first batch).

Each check runs in a fresh interpreter: freezing is process-wide, and the test process
must not be changed by it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fintrack.config import Settings
from fintrack.core.heap import THRESHOLDS

_SETTLE_TWICE = """
import gc, json
from fintrack.core import heap
before = gc.get_freeze_count()
heap.settle_after_startup()
first = gc.get_freeze_count()
full = []
gc.callbacks.append(lambda phase, info: full.append(1) if info["generation"] == 2 else None)
heap.settle_after_startup()
print(json.dumps({"before": before, "first": first, "second": gc.get_freeze_count(),
                  "threshold": gc.get_threshold(), "full_collections": len(full)}))
"""

_LIFESPAN = """
import asyncio, gc, json
from fintrack.{role}.app import create_app

async def main():
    before = gc.get_freeze_count()
    async with create_app().lifespan():  # start-up and shut-down, as a server runs them
        print(json.dumps({{"before": before, "during": gc.get_freeze_count(),
                          "threshold": gc.get_threshold()}}))

asyncio.run(main())
"""


def _run(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_settle_freezes_once_and_raises_the_thresholds() -> None:
    out = _run(_SETTLE_TWICE)
    assert isinstance(out["before"], int)
    assert isinstance(out["first"], int)
    assert out["first"] > out["before"] + 1_000  # the imported modules' objects, at least
    assert out["second"] == out["first"]  # the second call froze nothing more...
    assert out["full_collections"] == 0  # ...and collected nothing
    assert out["threshold"] == list(THRESHOLDS)


@pytest.mark.parametrize("role", ["ingest", "notify"])
def test_the_http_roles_settle_when_started(role: str, settings: Settings) -> None:
    out = _run(_LIFESPAN.format(role=role), settings.to_env())
    assert isinstance(out["before"], int)
    assert isinstance(out["during"], int)
    assert out["during"] > out["before"] + 1_000
    assert out["threshold"] == list(THRESHOLDS)
