"""Stream entries as the worker handles them: parsing redis-py replies, decoding payloads.

A payload that can't be turned into a valid ``Transaction`` is poison: retrying will never
help, so it goes the dead-letter way once its attempts are used up.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import msgspec

from fintrack.core.currencies import MINOR_UNITS
from fintrack.core.errors import FinTrackError
from fintrack.core.models import MAX_AMOUNT, Transaction, transaction_decoder

TXN_FIELD = b"txn"
MAX_EPOCH_MS = 253_402_300_800_000  # year 10000: beyond it timestamptz arithmetic fails


class PoisonError(FinTrackError):
    """An entry whose payload can never be processed."""


class StreamEntry(NamedTuple):
    """One stream entry: its id and its fields (empty or None when the entry was deleted
    from the stream while still pending: XREADGROUP's history reports it that way)."""

    id: str
    fields: dict[bytes, bytes] | None

    @property
    def payload(self) -> bytes:
        return (self.fields or {}).get(TXN_FIELD, b"")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_entries(raw: Sequence[Any]) -> list[StreamEntry]:
    """``[(id, {field: value}) ...]`` as redis-py parses XRANGE-like replies (RESP2).

    An entry redis-py reports as ``(None, None)`` (deleted, in older servers' XAUTOCLAIM
    replies) is left out: Redis drops it from the pending list itself."""
    # tuple.__new__ skips the namedtuple's Python-level __new__: this runs per entry read.
    new = tuple.__new__
    return [
        new(StreamEntry, (i.decode() if type(i) is bytes else str(i), fields))
        for i, fields in raw
        if i is not None
    ]


def read_reply(response: Any, **options: Any) -> list[StreamEntry]:
    """A single-stream XREADGROUP reply as it comes off the wire (RESP3 map or RESP2 list),
    parsed in one pass: the worker's clients use it as their XREADGROUP response callback
    (redis-py's goes through two layers and a dict per entry, then ``parse_read`` again).
    An entry deleted while pending has no fields (``{}``)."""
    if not response:
        return []
    raw = next(iter(response.values())) if isinstance(response, dict) else response[0][1]
    new = tuple.__new__
    entries: list[StreamEntry] = []
    for item in raw:
        if item is None:
            continue
        entry_id, flat = item[0], item[1]
        pairs = iter(flat or ())
        text = entry_id.decode() if type(entry_id) is bytes else str(entry_id)
        entries.append(new(StreamEntry, (text, dict(zip(pairs, pairs, strict=False)))))
    return entries


def parse_read(reply: Any) -> list[StreamEntry]:
    """The entries of a single-stream XREADGROUP reply (RESP2 or RESP3 shape, or already
    parsed by ``read_reply``)."""
    if not reply:
        return []
    if isinstance(reply, list) and type(reply[0]) is StreamEntry:
        return reply
    if isinstance(reply, dict):
        (entries,) = reply.values()
        return parse_entries(entries[0] if entries and isinstance(entries[0], list) else entries)
    ((_, entries),) = reply
    return parse_entries(entries)


def _is_ip(text: str) -> bool:
    """An address PostgreSQL's ``inet`` takes (no IPv6 zone id). ``inet_pton`` is C: this
    check costs a fraction of ``ipaddress.ip_address``, which showed up in profiles."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        socket.inet_pton(family, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return False
    return True


def decode_transaction(entry: StreamEntry) -> Transaction:
    """The entry's ``txn`` field as a valid ``Transaction``; ``PoisonError`` if it isn't.

    Checks what the api validated, so a payload from a buggy or hostile writer can't reach
    PostgreSQL (where a bad row would fail the whole batch's statement)."""
    if not entry.fields:
        raise PoisonError("the entry has no fields (deleted from the stream while pending?)")
    payload = entry.fields.get(TXN_FIELD)
    if payload is None:
        raise PoisonError("the entry has no 'txn' field")
    try:
        txn = transaction_decoder.decode(payload)
    except msgspec.DecodeError as e:
        raise PoisonError(f"undecodable transaction: {e}") from e
    amount = txn.amount
    if not (amount.is_finite() and Decimal(0) < amount <= MAX_AMOUNT):
        raise PoisonError(f"amount {amount} is out of range")
    places = MINOR_UNITS.get(txn.currency)
    if places is None:
        raise PoisonError(f"{txn.currency[:8]!r} is not a known currency")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise PoisonError(f"amount {amount} has more than {places} decimal places")
    if not _is_ip(txn.source_ip):
        raise PoisonError(f"source_ip {txn.source_ip[:45]!r} is not an IP address")
    for name in ("user_id", "client_id", "merchant_type"):
        value: str = getattr(txn, name)
        if not value or "\x00" in value:  # PostgreSQL text can't hold NUL
            raise PoisonError(f"{name} must be non-empty text without NUL characters")
    if not 0 <= txn.received_at_ms < MAX_EPOCH_MS:
        raise PoisonError(f"received_at_ms {txn.received_at_ms} is out of range")
    return txn
