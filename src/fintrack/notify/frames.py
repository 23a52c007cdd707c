"""SSE frames: the bytes one security event becomes on the wire, built once per event.

An event's SSE ``id`` is its events-stream entry id (``ms-seq``); we carry it as a tuple of
ints so ids compare in stream order. A ``Frame`` holds the finished wire bytes plus the few
attributes filters look at (``EventMeta``), so fan-out and replay never re-encode anything.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import msgspec
import structlog

from fintrack.core.events import SEVERITY_ORDER

log = structlog.get_logger(__name__)

EventId = tuple[int, int]

# ASCII digits only, and nothing after them (`$` would allow a final newline).
_ID_TEXT = re.compile(r"^([0-9]{1,20})-([0-9]{1,20})\Z")
_MAX_PART = 2**64 - 1  # Redis stream id parts are unsigned 64-bit integers
_SEVERITY_RANK: dict[str, int] = {name: rank for rank, name in enumerate(SEVERITY_ORDER)}

PING = b": ping\n\n"


class EventIdError(ValueError):
    """Text that is not an events-stream entry id (``<ms>-<seq>``)."""


class EventMeta(NamedTuple):
    """What filters look at, taken from the event without re-reading its JSON per client."""

    kind: str
    user_id: str
    status: str
    severity: int  # index in SEVERITY_ORDER; unknown severities rank lowest
    rules: frozenset[str]


class Frame(NamedTuple):
    """One event, ready to send: its id, its filter attributes, and its SSE bytes."""

    id: EventId
    meta: EventMeta
    wire: bytes


class _Reason(msgspec.Struct):
    rule: str


class _Summary(msgspec.Struct):
    # Only the fields filters need: msgspec skips the rest of the JSON without building it.
    kind: str
    user_id: str
    status: str
    severity: str
    reasons: list[_Reason] = msgspec.field(default_factory=list)


_summary_decoder = msgspec.json.Decoder(_Summary)


def parse_event_id(text: str | bytes) -> EventId:
    """``"1732838400000-0"`` → ``(1732838400000, 0)``; raise ``EventIdError`` otherwise."""
    raw = text.decode("ascii", "replace") if isinstance(text, bytes) else text
    match = _ID_TEXT.match(raw)
    if not match:
        raise EventIdError(f"not an event id (expected <ms>-<seq>): {raw[:40]!r}")
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > _MAX_PART or seq > _MAX_PART:
        raise EventIdError(f"event id out of range: {raw[:45]!r}")
    return ms, seq


def format_event_id(event_id: EventId) -> str:
    return f"{event_id[0]}-{event_id[1]}"


def severity_rank(severity: str) -> int:
    return _SEVERITY_RANK.get(severity, 0)


def encode_frame(event_id: EventId, kind: str, data: bytes) -> bytes:
    """``id:``/``event:``/``data:`` lines and the blank line that ends the event.

    Event JSON never contains a raw newline (JSON escapes them), but archived text is not
    ours to trust blindly: a line break would end the field early, so split it into
    several ``data:`` lines, which the client joins back with ``\\n``.
    """
    head = b"id: %d-%d\nevent: %s\n" % (event_id[0], event_id[1], kind.encode())
    if b"\n" in data or b"\r" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
    return head + b"data: " + data + b"\n\n"


def id_only_frame(event_id: EventId) -> bytes:
    """An ``id:`` without data: the client's Last-Event-ID moves on, no event fires.

    Sent when filtered-out events were skipped, so a reconnect doesn't replay them again.
    """
    return b"id: %d-%d\n\n" % event_id


def retry_frame(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


def frame_from_entry(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Frame:
    """An events-stream entry (fields ``kind``/``txn``/``data``) → its frame.

    Raises ``EventIdError``, ``KeyError`` or ``msgspec.DecodeError`` for an entry that isn't
    an event.
    """
    return _frame(parse_event_id(entry_id), fields[b"data"])


def _frame(event_id: EventId, data: bytes) -> Frame:
    summary = _summary_decoder.decode(data)
    meta = EventMeta(
        kind=summary.kind,
        user_id=summary.user_id,
        status=summary.status,
        severity=severity_rank(summary.severity),
        rules=frozenset(reason.rule for reason in summary.reasons),
    )
    return Frame(event_id, meta, encode_frame(event_id, summary.kind, data))


def frames_from_entries(entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> list[Frame]:
    """Frames of stream entries; an entry that isn't an event is logged and skipped, so one
    foreign or corrupt entry never stops a feed."""
    frames = []
    for entry_id, fields in entries:
        try:
            frames.append(frame_from_entry(entry_id, fields))
        except (EventIdError, KeyError, msgspec.DecodeError) as e:
            log.error("unreadable event skipped", entry_id=entry_id, error=str(e))
    return frames


def frame_from_row(id_ms: int, id_seq: int, data: str) -> Frame:
    """A ``security_events`` row → its frame, read like a live one; raises
    ``msgspec.DecodeError`` for data that isn't an event."""
    return _frame((id_ms, id_seq), data.encode())
