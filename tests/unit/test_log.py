"""Log configuration: what reaches a log line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from fintrack.config import Settings
from fintrack.log import JsonLines, _buffered, configure_logging, hot_lines


def _fail_with_a_secret_in_scope() -> None:
    api_key = "planted-secret-in-a-local-variable"
    raise RuntimeError(f"boom ({len(api_key)} chars)")


def test_exception_logs_carry_no_local_variables(capfd: pytest.CaptureFixture[str]) -> None:
    """A logged traceback names frames and the error but never the frames' local values."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(Settings(log_format="json"))
    try:
        try:
            _fail_with_a_secret_in_scope()
        except RuntimeError:
            structlog.get_logger("test").exception("it failed")
        err = capfd.readouterr().err
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = handlers, level
    assert "it failed" in err
    assert "_fail_with_a_secret_in_scope" in err
    assert "planted-secret" not in err


@contextlib.contextmanager
def configured(settings: Settings) -> Iterator[None]:
    """Logging configured for ``settings`` (on the stderr of the moment: inside the test,
    where pytest's capture is), restored afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(settings)
    try:
        yield
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        root.handlers[:], root.level = handlers, level


def test_hot_lines_render_like_structlog(capfd: pytest.CaptureFixture[str]) -> None:
    """The per-request writer gives the keys and values structlog's chain gives (bound
    context included, secrets redacted), in the same stream, in order."""
    with configured(Settings(log_format="json")):
        writer = hot_lines()
        assert writer is not None
        structlog.contextvars.bind_contextvars(request_id="r-1", txn_id="t-1")
        fields = {"method": "POST", "path": "/x", "status": 202, "token": "planted-secret"}
        structlog.get_logger("test").info("request", **fields)
        writer.info("request", dict(fields))
        structlog.get_logger("test").info("after")
        writer._flush()  # what the event loop would do within FLUSH_S
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()]
    assert [line["event"] for line in lines] == ["request", "request", "after"]
    by_structlog, ours = lines[0], lines[1]
    assert ours.keys() == by_structlog.keys()
    assert {k: v for k, v in ours.items() if k != "timestamp"} == {
        k: v for k, v in by_structlog.items() if k != "timestamp"
    }
    assert ours["token"] == "[redacted]"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", ours["timestamp"])


async def test_hot_lines_are_flushed_soon_after_within_a_loop(tmp_path: Path) -> None:
    """Inside an event loop a line is buffered, then flushed within FLUSH_S, once."""
    with (tmp_path / "out").open("wb") as stream:
        writer = JsonLines(stream)
        writer.info("request", {"n": 1})
        writer.info("request", {"n": 2})
        assert (tmp_path / "out").read_bytes() == b""  # buffered, not yet written
        deadline = time.monotonic() + 2
        while not (tmp_path / "out").read_bytes() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        lines = (tmp_path / "out").read_bytes().splitlines()
    assert [json.loads(line)["n"] for line in lines] == [1, 2]


@pytest.mark.parametrize(
    "settings",
    [Settings(log_format="json", log_level="warning"), Settings(log_format="console")],
    ids=["above info", "console"],
)
def test_hot_lines_only_for_json_at_info(settings: Settings) -> None:
    """Console output stays readable (structlog renders it) and a level above info gets no
    request lines at all: the caller is told to use structlog."""
    with configured(settings):
        assert hot_lines() is None


def test_an_unbuffered_stderr_gets_a_buffer(tmp_path: Path) -> None:
    """With PYTHONUNBUFFERED (as in the image) stderr's binary layer is the raw file; the
    log stream buffers it, so a request line is not a system call of its own."""
    with (tmp_path / "out").open("wb", buffering=0) as raw:
        stream = _buffered(raw)
        assert stream is not raw
        JsonLines(stream).info("request", {"n": 1})  # no event loop: flushed at once
        assert json.loads((tmp_path / "out").read_bytes())["n"] == 1
        stream.write(b"pending\n")
        assert (tmp_path / "out").read_bytes().count(b"\n") == 1
        stream.flush()
        assert (tmp_path / "out").read_bytes().endswith(b"pending\n")
    with (tmp_path / "out").open("ab") as already_buffered:
        assert _buffered(already_buffered) is already_buffered
