"""Body limits beyond size: JSON nesting depth and the length of free-text fields.

The size of a body is bounded by Litestar (``request_max_body_size``) before it is read;
these checks run on the bytes before (depth) and after (lengths) msgspec decodes them.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from fintrack.config import Settings
from fintrack.core.errors import FieldError
from fintrack.core.models import TransactionRequest
from fintrack.ingest.problems import MalformedBody

# A JSON string (skipped whole, so brackets inside it don't count) or a bracket.
_TOKENS: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_OPEN: Final = frozenset(b"[{")


class BodyLimits(NamedTuple):
    """How deep a body may nest and how long ``user_id``/``merchant_type`` may be."""

    max_depth: int
    max_text: int


def limits_from(settings: Settings) -> BodyLimits:
    return BodyLimits(settings.max_json_depth, settings.max_text_length)


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in ``raw`` (``{}`` is 1, ``[{}]`` is 2).

    Malformed input gets a number too; the decoder refuses it afterwards.
    """
    depth = deepest = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if len(token) == 1:
            if token[0] in _OPEN:
                depth += 1
                deepest = max(deepest, depth)
            else:
                depth -= 1
    return deepest


def check_depth(raw: bytes, limit: int) -> None:
    """Raise ``MalformedBody`` if ``raw`` nests deeper than ``limit``.

    Cheap for normal bodies: unless there are more brackets than ``limit`` in total the
    nesting can't exceed it, and counting two bytes is done in C.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    if json_depth(raw) > limit:
        raise MalformedBody(f"JSON nested deeper than {limit} levels")


def check_text(req: TransactionRequest, limit: int) -> None:
    """Raise ``FieldError`` for a ``user_id`` or ``merchant_type`` longer than ``limit``."""
    for name in ("user_id", "merchant_type"):
        value: str | None = getattr(req, name)
        if value is not None and len(value) > limit:
            raise FieldError(name, f"must be at most {limit} characters")
