"""What clients read back about a transaction: one JSON shape for GET, waits and exports."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final, Literal
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool

from fintrack.core.events import RuleHit

FinalStatus = Literal["APPROVED", "FLAGGED", "BLOCKED", "FAILED"]


class TransactionView(msgspec.Struct, frozen=True, kw_only=True):
    """A decided transaction: its status, why, and what it was."""

    txn_id: str
    status: FinalStatus
    risk_score: int
    reasons: tuple[RuleHit, ...]
    amount: str  # exact decimal text; a JSON number would pass through a binary float
    currency: str
    user_id: str
    merchant_type: str
    source_ip: str
    received_at: str
    decided_at: str
    failure_reason: str | None


class Accepted(msgspec.Struct, frozen=True):
    """A transaction accepted but not decided yet."""

    txn_id: str
    status: Literal["PENDING"] = "PENDING"


# Reasons come as JSON text built by PostgreSQL: one correlated lookup on rule_hits' primary
# key per row, which keeps exports a streaming index scan (no GROUP BY over the whole set).
SELECT: Final = """
SELECT t.txn_id::text, t.status, t.risk_score,
       COALESCE((SELECT json_agg(json_build_object('rule', h.rule, 'score', h.score,
                                                   'reason', h.reason)
                                 ORDER BY h.score DESC, h.rule)
                 FROM rule_hits h WHERE h.txn_id = t.txn_id), '[]'::json)::text,
       t.amount::text, t.currency, t.user_id, t.merchant_type, host(t.source_ip),
       t.received_at, t.decided_at, t.failure_reason
FROM transactions t
"""

_reasons = msgspec.json.Decoder(tuple[RuleHit, ...])
# How long a read waits for a pooled connection: with PostgreSQL down, a quick 503 beats
# holding the client for the pool's own (longer) timeout.
CONNECT_TIMEOUT_S: Final = 2.0


def iso(moment: datetime) -> str:
    """A timestamp as ISO 8601 UTC with milliseconds, like the events stream's."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def row_to_view(row: tuple[Any, ...]) -> TransactionView:
    """A row of ``SELECT`` → its view."""
    (txn_id, status, score, reasons, amount, currency, user, merchant, ip, received, decided,
     failure) = row  # fmt: skip
    return TransactionView(
        txn_id=txn_id,
        status=status,
        risk_score=score,
        reasons=_reasons.decode(reasons),
        amount=amount,
        currency=currency.strip(),
        user_id=user,
        merchant_type=merchant,
        source_ip=ip,
        received_at=iso(received),
        decided_at=iso(decided),
        failure_reason=failure,
    )


async def fetch_one(
    pool: AsyncConnectionPool[Any], client_id: str, txn_id: UUID
) -> TransactionView | None:
    """The decided transaction ``txn_id`` if ``client_id`` sent it, else None."""
    async with pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
        cur = await conn.execute(
            SELECT + " WHERE t.txn_id = %s AND t.client_id = %s", (txn_id, client_id)
        )
        row = await cur.fetchone()
    return row_to_view(row) if row is not None else None
