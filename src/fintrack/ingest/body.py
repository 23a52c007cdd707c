"""Reading request bodies: raw bytes → request structs, with errors that name the field.

Bodies are decoded from bytes whatever the Content-Type says (the seed's curl sends none,
which curl turns into a form type), and the amount keeps its exact JSON text.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from fintrack.core.errors import FieldError
from fintrack.core.models import TransactionRequest, request_decoder
from fintrack.ingest.limits import BodyLimits, check_depth, check_text
from fintrack.ingest.problems import ROOT, MalformedBody

_raw_items = msgspec.json.Decoder(list[msgspec.Raw])


def decode_transaction(raw: bytes, limits: BodyLimits) -> TransactionRequest:
    """JSON bytes → the request struct, within ``limits``.

    Raises msgspec's ``ValidationError`` (a field is wrong), ``FieldError`` (a field holds
    NaN or Infinity, which are not JSON, or a text is too long), ``MalformedBody`` (also
    for nesting deeper than allowed) or msgspec's ``DecodeError``.
    """
    check_depth(raw, limits.max_depth)
    try:
        req = request_decoder.decode(raw)
    except RecursionError as e:
        raise MalformedBody("JSON nested too deeply") from e
    except UnicodeDecodeError as e:  # msgspec checks UTF-8 only inside strings, and so
        raise MalformedBody("the body is not UTF-8") from e
    except msgspec.ValidationError:
        raise
    except msgspec.DecodeError as e:
        field = _non_finite_field(raw)
        if field is not None:
            raise FieldError(
                field, "must be a finite number (NaN and Infinity are not JSON)"
            ) from e
        raise
    check_text(req, limits.max_text)
    return req


def decode_items(raw: bytes, limit: int, max_depth: int) -> list[msgspec.Raw]:
    """A JSON array → its items, still undecoded; more than ``limit`` items is a 413,
    nesting deeper than ``max_depth`` (the array counts as one level) a 400."""
    try:
        items = _raw_items.decode(raw)
    except RecursionError as e:
        raise MalformedBody("JSON nested too deeply") from e
    except msgspec.ValidationError as e:
        raise FieldError(ROOT, "must be a JSON array of transactions") from e
    if len(items) > limit:
        raise RequestEntityTooLarge(f"a batch holds at most {limit} transactions")
    # Item by item: each is small, so the bracket count settles almost all of them.
    try:
        for item in items:
            check_depth(bytes(item), max_depth - 1)
    except MalformedBody:
        raise MalformedBody(f"JSON nested deeper than {max_depth} levels") from None
    return items


def _non_finite_field(raw: bytes) -> str | None:
    """The top-level field holding NaN or ±Infinity, if that is why the body is not JSON.

    Only run on bodies msgspec refused, which are bounded by the body size limit; Python's
    json module reads those literals, msgspec rightly does not.
    """
    try:
        value: Any = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, float) and not math.isfinite(item):
                return str(key)
    return None
