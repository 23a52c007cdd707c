"""structlog configuration, done once by the CLI for every role."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import msgspec
import structlog
import structlog.tracebacks

from fintrack.config import Settings

_encoder = msgspec.json.Encoder()

# Names whose values are secrets; their values never reach a log line.
_SECRET_KEYS = frozenset(
    {
        "authorization", "api_key", "x-api-key", "password", "token", "secret", "cookie",
        "set-cookie", "admin_token", "session", "session_secret", "database_url", "redis_url",
        "dsn",
    }
)  # fmt: skip


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in event.keys() & _SECRET_KEYS:
        event[key] = "[redacted]"
    return event


# Line breaks and other control characters in a value would let a client forge log lines
# on a console (JSON escapes them by itself).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(text: str) -> str:
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


def _escape_control(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = _escape(value)
    return event


def _serialize(obj: Any, **_: Any) -> bytes:
    # structlog passes default=...; msgspec's encoder takes no such argument.
    return _encoder.encode(obj)


def _serialize_text(obj: Any, **_: Any) -> str:
    return _encoder.encode(obj).decode()


def configure_logging(settings: Settings) -> None:
    """JSON lines (one object per line; newlines in values are escaped by JSON itself), or
    a readable console format on a terminal."""
    console = settings.log_format == "console" or (
        settings.log_format == "auto" and sys.stderr.isatty()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
    ]
    if console:
        shared.append(_escape_control)
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    if console:
        structlog.configure(
            processors=[*shared, structlog.dev.ConsoleRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
            cache_logger_on_first_use=True,
        )
    else:
        structlog.configure(
            processors=[
                *shared,
                # Tracebacks without local variables: a frame's locals can hold a secret.
                structlog.processors.ExceptionRenderer(
                    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
                ),
                structlog.processors.JSONRenderer(serializer=_serialize),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
            cache_logger_on_first_use=True,
        )
    # Route the standard library's loggers (granian, psycopg) through the same renderer.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.dev.ConsoleRenderer()
                if console
                else structlog.processors.JSONRenderer(serializer=_serialize_text),
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
