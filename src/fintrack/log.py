"""structlog configuration, done once by the CLI for every role; and ``hot_lines`` for
the one line per request that the api writes (structlog's chain costs too much there)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime
import io
import logging
import re
import sys
from typing import IO, Any, BinaryIO, cast

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


class JsonLines:
    """JSON lines as the structlog configuration renders them (``event``, ``level``,
    ``timestamp``, the bound context, redacted), for a line written on every request.

    structlog's processor chain and its write and flush after each line cost 13–21 µs per
    line, a tenth of the api's CPU per request; this costs about a third of that. Lines go
    to the same buffered stream as structlog's, which flushes it after each of its own
    lines, and are flushed at most ``FLUSH_S`` later otherwise (by the running event loop;
    at once without one): they keep their order with structlog's lines."""

    FLUSH_S = 0.05

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._flush_due = False

    def info(self, event: str, fields: dict[str, Any]) -> None:
        line = structlog.contextvars.get_contextvars()
        line.update(fields)
        line["event"] = event
        line["level"] = "info"
        # As structlog's TimeStamper(fmt="iso", utc=True) writes it.
        line["timestamp"] = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        _redact(None, "", line)
        self._stream.write(_encoder.encode(line) + b"\n")
        if self._flush_due:
            return
        try:
            asyncio.get_running_loop().call_later(self.FLUSH_S, self._flush)
        except RuntimeError:  # no event loop: nothing would flush later
            self._stream.flush()
            return
        self._flush_due = True

    def _flush(self) -> None:
        self._flush_due = False
        _flush_quietly(self._stream)


_hot_lines: JsonLines | None = None
_stream: BinaryIO | None = None  # the buffered stream JSON lines go to


def _buffered(stream: BinaryIO) -> BinaryIO:
    """``stream`` with a buffer: with PYTHONUNBUFFERED (as in our image) stderr's binary
    layer is the raw file, and each write would be a system call."""
    if isinstance(stream, io.BufferedIOBase):
        return stream
    buffered = cast(BinaryIO, io.BufferedWriter(cast(io.RawIOBase, stream)))
    atexit.register(_flush_quietly, buffered)
    return buffered


def _flush_quietly(stream: IO[bytes]) -> None:
    with contextlib.suppress(OSError, ValueError):  # closed at shutdown: nothing to do
        stream.flush()


def flush_logs() -> None:
    """Write out what the log stream holds (at shutdown: the last lines)."""
    if _stream is not None:
        _flush_quietly(_stream)


def hot_lines() -> JsonLines | None:
    """The writer for per-request lines when logging is JSON at ``info`` or below, else
    None (the caller then logs through structlog: readable console lines, or nothing)."""
    return _hot_lines


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
    global _hot_lines, _stream
    stream = _stream = _buffered(sys.stderr.buffer)
    _hot_lines = None if console or level > logging.INFO else JsonLines(stream)
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
            logger_factory=structlog.BytesLoggerFactory(stream),
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
