"""What the worker publishes for a decision: the events-stream fields of the contract."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from fintrack.core.events import (
    EVENT_FIELDS,
    Decision,
    RuleHit,
    event_values,
    events_for,
    published_values,
    stream_fields,
)
from fintrack.core.models import Status, Transaction


def _transaction() -> Transaction:
    return Transaction(
        txn_id=uuid.uuid4(),
        user_id="user_1",
        amount=Decimal("150000.00"),
        currency="INR",
        merchant_type="luxury_goods",
        source_ip="192.0.2.1",
        client_id="acme",
        received_at_ms=1_700_000_000_123,
    )


def test_event_values_are_the_stream_fields_as_text() -> None:
    """``event_values`` gives ``core.events.stream_fields`` byte for byte, in field order,
    for the decision and the alert of a risky transaction."""
    txn = _transaction()
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


@pytest.mark.parametrize(
    ("status", "failure_reason"),
    [("APPROVED", None), ("FLAGGED", None), ("BLOCKED", None), ("FAILED", "boom")],
)
def test_published_values_encode_each_event_as_its_own_encoding(
    status: Status, failure_reason: str | None
) -> None:
    """The worker's one-encoding path gives what encoding each event on its own gives:
    the alert's JSON is the decision's with its ``kind`` changed, nothing else."""
    txn = _transaction()
    decision = Decision(
        txn=txn,
        status=status,
        risk_score=0 if status == "APPROVED" else 75,
        hits=() if status == "APPROVED" else (RuleHit("velocity_count", 40, "6 in 60 s"),),
        decided_at_ms=1_700_000_000_456,
        failure_reason=failure_reason,
    )
    expected = [value for event in events_for(decision) for value in event_values(event)]
    assert published_values(decision) == expected
    assert published_values(decision, str(txn.txn_id)) == expected
    assert len(expected) == (3 if status == "APPROVED" else 6)
