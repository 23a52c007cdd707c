"""How `fintrack run api|notifier` configures Granian (its serve call is replaced here)."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from fintrack import cli, log
from fintrack.core import serve


@pytest.mark.parametrize(("lifetime", "expected"), [("0.3", 5), ("12", 12), ("3600", 30)])
def test_notifier_shutdown_waits_for_streams_within_bounds(
    monkeypatch: pytest.MonkeyPatch, lifetime: str, expected: int
) -> None:
    """Granian waits at most as long as a stream lives (30 s at most), and at least 5 s:
    with 1 s it killed a test notifier mid-shutdown on a busy host."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(serve, "serve", lambda target, **options: calls.append(options))
    # The command would point this process's logging at the runner's captured output,
    # closed once it returns: later tests in the process could no longer log.
    monkeypatch.setattr(log, "configure_logging", lambda settings: None)
    monkeypatch.setenv("FINTRACK_SSE_LIFETIME_S", lifetime)

    result = CliRunner().invoke(cli.app, ["run", "notifier"])

    assert result.exit_code == 0, result.output
    assert [c["kill_timeout_s"] for c in calls] == [expected]
