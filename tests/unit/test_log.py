"""Log configuration: what reaches a log line."""

from __future__ import annotations

import logging

import pytest
import structlog

from fintrack.config import Settings
from fintrack.log import configure_logging


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
