"""Decisions and the security events published about them.

A worker turns each ``Transaction`` into a ``Decision``; every decision is published once on
the events stream as a ``decision`` event, and FLAGGED/BLOCKED/FAILED ones also as an
``alert``. The SSE feed sends ``SecurityEvent`` JSON as the ``data:`` of each event, with
the event stream entry id as the SSE ``id:``.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

from fintrack.core.models import Status, Transaction

EventKind = Literal["decision", "alert"]
Severity = Literal["info", "low", "medium", "high", "critical"]

SEVERITY_BY_STATUS: dict[str, Severity] = {
    "APPROVED": "info",
    "FLAGGED": "medium",
    "BLOCKED": "high",
    "FAILED": "critical",
}
SEVERITY_ORDER: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")


class RuleHit(msgspec.Struct, frozen=True):
    """One rule that fired: its name, what it added to the risk score, and why."""

    rule: str
    score: int
    reason: str


class Decision(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome for one transaction, as committed to PostgreSQL."""

    txn: Transaction
    status: Status
    risk_score: int
    hits: tuple[RuleHit, ...]
    decided_at_ms: int
    failure_reason: str | None = None


class SecurityEvent(msgspec.Struct, frozen=True, kw_only=True):
    """The JSON ``data:`` of one SSE event (``event:`` is ``kind``)."""

    kind: EventKind
    txn_id: str
    user_id: str
    amount: str  # exact decimal text; JSON numbers would pass through binary floats in JS
    currency: str
    merchant_type: str
    source_ip: str
    status: Status
    score: int
    severity: Severity
    reasons: tuple[RuleHit, ...]
    received_at: str
    decided_at: str


# A worker's batch shares one decision time and its arrivals share milliseconds: formatting
# was a measurable share of the worker's CPU, and a hit costs a dictionary lookup.
@functools.lru_cache(maxsize=4096)
def iso_ms(epoch_ms: int) -> str:
    """Milliseconds since the epoch → ISO 8601 UTC with millisecond precision."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")


def events_for(decision: Decision) -> list[SecurityEvent]:
    """The events one decision publishes: always a ``decision``, plus an ``alert`` if risky."""
    base = _decision_event(decision, None)
    if decision.status == "APPROVED":
        return [base]
    return [base, msgspec.structs.replace(base, kind="alert")]


def _decision_event(decision: Decision, txn_id: str | None) -> SecurityEvent:
    """The ``decision`` event; ``txn_id``: the transaction id as text, if the caller has it."""
    txn = decision.txn
    reasons = decision.hits
    if decision.failure_reason is not None:
        reasons = (*reasons, RuleHit("processing", 0, decision.failure_reason))
    return SecurityEvent(
        kind="decision",
        txn_id=str(txn.txn_id) if txn_id is None else txn_id,
        user_id=txn.user_id,
        amount=str(txn.amount),
        currency=txn.currency,
        merchant_type=txn.merchant_type,
        source_ip=txn.source_ip,
        status=decision.status,
        score=decision.risk_score,
        severity=SEVERITY_BY_STATUS[decision.status],
        reasons=reasons,
        received_at=iso_ms(txn.received_at_ms),
        decided_at=iso_ms(decision.decided_at_ms),
    )


event_encoder = msgspec.json.Encoder()
event_decoder = msgspec.json.Decoder(SecurityEvent)


# The fields of an events-stream entry: readers filter on kind and txn without decoding
# ``data``, which is sent to SSE clients byte for byte.
EVENT_FIELDS: Final = ("kind", "txn", "data")


def event_values(event: SecurityEvent) -> tuple[str, str, str]:
    """The values of ``EVENT_FIELDS`` for ``event``, as text, in that order (what the
    worker's publish script takes)."""
    return event.kind, event.txn_id, event_encoder.encode(event).decode()


# ``kind`` is SecurityEvent's first field, so an event's JSON starts with it.
_DECISION_HEAD: Final = '{"kind":"decision",'
_ALERT_HEAD: Final = '{"kind":"alert",'


def published_values(decision: Decision, txn_id: str | None = None) -> list[str]:
    """``event_values`` of each of ``events_for(decision)``, one after the other. The JSON
    is encoded once: an alert is its decision event with another ``kind``, the first key.
    ``txn_id``: the transaction id as text, if the caller has it already."""
    base = _decision_event(decision, txn_id)
    data = event_encoder.encode(base).decode()
    values = ["decision", base.txn_id, data]
    if decision.status != "APPROVED":
        values += ("alert", base.txn_id, _ALERT_HEAD + data[len(_DECISION_HEAD) :])
    return values


def stream_fields(event: SecurityEvent) -> dict[str, bytes]:
    """The fields of ``event``'s events-stream entry, as XADD takes them."""
    values = event_values(event)
    return {name: value.encode() for name, value in zip(EVENT_FIELDS, values, strict=True)}
