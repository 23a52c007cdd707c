"""The worker's last check of a stream entry before it reaches the engine and PostgreSQL:
a valid transaction decodes unchanged; anything the api would never have enqueued is
poison, refused with a reason naming what is wrong (it goes the dead-letter way)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from fintrack.core.models import MAX_AMOUNT, Transaction, transaction_encoder
from fintrack.fraud._entries import MAX_EPOCH_MS, PoisonError, StreamEntry, decode_transaction

VALID = Transaction(
    txn_id=uuid.UUID("6f1c2b9e-0d5a-4c39-9a57-3f0b8f1e2a10"),
    user_id="user_1",
    amount=Decimal("150000.00"),
    currency="INR",
    merchant_type="general",
    source_ip="192.0.2.1",
    client_id="acme",
    received_at_ms=1_700_000_000_123,
)


def _entry(fields: dict[bytes, bytes] | None) -> StreamEntry:
    return StreamEntry("1700000000123-0", fields)


def _payload(**changes: Any) -> dict[bytes, bytes]:
    # Structs are not validated when built, so the payload can hold what the api refuses.
    txn = msgspec.structs.replace(VALID, **changes)
    return {b"txn": transaction_encoder.encode(txn)}


def test_a_valid_entry_decodes_unchanged() -> None:
    assert decode_transaction(_entry(_payload())) == VALID
    ipv6 = decode_transaction(_entry(_payload(source_ip="2001:db8::1")))
    assert ipv6.source_ip == "2001:db8::1"
    yen = decode_transaction(_entry(_payload(amount=Decimal("1500"), currency="JPY")))
    assert yen.amount == Decimal("1500")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (None, "no fields"),
        ({}, "no fields"),
        ({b"other": b"x"}, "no 'txn' field"),
        ({b"txn": b"not json"}, "undecodable"),
        ({b"txn": b'["6f1c2b9e-0d5a-4c39-9a57-3f0b8f1e2a10"]'}, "undecodable"),
        (_payload(amount=Decimal("0")), "out of range"),
        (_payload(amount=Decimal("-5.00")), "out of range"),
        (_payload(amount=MAX_AMOUNT + 1), "out of range"),
        (_payload(amount=Decimal("NaN")), "out of range"),
        (_payload(amount=Decimal("Infinity")), "out of range"),
        (_payload(amount=Decimal("10.001")), "more than 2 decimal places"),
        (_payload(amount=Decimal("10.5"), currency="JPY"), "more than 0 decimal places"),
        (_payload(currency="ZZZ"), "not a known currency"),
        (_payload(source_ip="not-an-ip"), "not an IP address"),
        (_payload(source_ip="192.0.2.1\x00"), "not an IP address"),
        (_payload(user_id=""), "user_id must be non-empty"),
        (_payload(merchant_type="gen\x00eral"), "merchant_type must be non-empty"),
        (_payload(client_id=""), "client_id must be non-empty"),
        (_payload(received_at_ms=-1), "received_at_ms -1 is out of range"),
        (_payload(received_at_ms=MAX_EPOCH_MS), "is out of range"),
    ],
)
def test_poison_is_refused_by_name(fields: dict[bytes, bytes] | None, reason: str) -> None:
    with pytest.raises(PoisonError, match=reason):
        decode_transaction(_entry(fields))
