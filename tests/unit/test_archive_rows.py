"""The archive's rows come from an events-stream entry's fields, without decoding its JSON;
anything that is not a well-formed event is refused by name (the archiver logs and skips
it, since PostgreSQL would refuse the whole COPY)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from fintrack.core.events import Decision, RuleHit, SecurityEvent, events_for, stream_fields
from fintrack.core.models import Transaction
from fintrack.fraud._entries import StreamEntry
from fintrack.fraud.archive import to_row
from fintrack.fraud.store import ArchivedEvent


def sample_event() -> SecurityEvent:
    """The alert of a blocked transaction whose reason needs JSON escapes."""
    txn = Transaction(
        txn_id=uuid.uuid4(),
        user_id="user_1",
        amount=Decimal("150000.00"),
        currency="INR",
        merchant_type="luxury_goods",
        source_ip="192.0.2.1",
        client_id="acme",
        received_at_ms=1_700_000_000_123,
    )
    hit = RuleHit("high_value", 50, 'a "quoted" reason, a back\\slash and é')
    decision = Decision(
        txn=txn, status="BLOCKED", risk_score=90, hits=(hit,), decided_at_ms=1_700_000_000_456
    )
    return events_for(decision)[1]


def _fields(event: SecurityEvent) -> dict[bytes, bytes]:
    """The entry's fields as redis-py reads them back: bytes to bytes."""
    return {name.encode(): value for name, value in stream_fields(event).items()}


def _entry(fields: dict[bytes, bytes] | None, entry_id: str = "1732838400123-7") -> StreamEntry:
    return StreamEntry(entry_id, fields)


def test_a_published_event_becomes_its_row_with_the_data_verbatim() -> None:
    event = sample_event()
    fields = _fields(event)
    assert to_row(_entry(fields)) == ArchivedEvent(
        1732838400123, 7, event.kind, event.txn_id, fields[b"data"].decode()
    )


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({b"data": None}, "no 'data' field"),
        ({b"txn": None}, "no 'txn' field"),
        ({b"kind": None}, "no 'kind' field"),
        ({b"kind": b"audit"}, "not an event kind: 'audit'"),
        ({b"txn": b"12345"}, "not a transaction id: '12345'"),
        ({b"txn": str(uuid.uuid4()).upper().encode()}, "not a transaction id"),
        ({b"data": b"\xff\xfe"}, "not UTF-8"),
    ],
)
def test_a_malformed_entry_is_refused_by_name(
    change: dict[bytes, bytes | None], problem: str
) -> None:
    fields = _fields(sample_event())
    for name, value in change.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    with pytest.raises(ValueError, match=problem):
        to_row(_entry(fields))


def test_an_entry_deleted_while_pending_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'kind' field"):
        to_row(_entry(None))
