"""What the worker publishes for a decision: the events-stream fields of the contract."""

from __future__ import annotations

import uuid
from decimal import Decimal

from fintrack.core.events import (
    EVENT_FIELDS,
    Decision,
    RuleHit,
    event_values,
    events_for,
    stream_fields,
)
from fintrack.core.models import Transaction


def test_event_values_are_the_stream_fields_as_text() -> None:
    """``event_values`` gives ``core.events.stream_fields`` byte for byte, in field order,
    for the decision and the alert of a risky transaction."""
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
    decision = Decision(
        txn=txn,
        status="BLOCKED",
        risk_score=90,
        hits=(RuleHit("high_value", 50, 'a reason with "quotes" and é'),),
        decided_at_ms=1_700_000_000_456,
    )
    events = events_for(decision)
    assert [e.kind for e in events] == ["decision", "alert"]
    for event in events:
        fields = stream_fields(event)
        assert [v.encode() for v in event_values(event)] == [fields[n] for n in EVENT_FIELDS]
