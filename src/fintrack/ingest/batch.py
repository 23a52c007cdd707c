"""``POST /transactions/batch``: many transactions, one Redis round trip, one result each."""

from __future__ import annotations

from collections import Counter
from typing import Literal

import msgspec

from fintrack.core.errors import ConflictError, FieldError, UnavailableError
from fintrack.core.models import Transaction, validate_request
from fintrack.ingest import metrics
from fintrack.ingest.body import decode_transaction
from fintrack.ingest.handoff import HandOffResult
from fintrack.ingest.problems import MalformedBody, Problem, problem_for
from fintrack.ingest.ratelimit import RateLimited
from fintrack.ingest.state import Resources


class BatchItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The result for one item of a batch, by its position in the request."""

    index: int
    txn_id: str | None
    status: Literal["accepted", "duplicate", "error"]
    error: Problem | None = None


class BatchResult(msgspec.Struct, frozen=True):
    """One result per submitted item, in request order."""

    results: list[BatchItem]


async def handle_batch(
    res: Resources, client: str, items: list[msgspec.Raw], received_at_ms: int
) -> tuple[BatchResult, int]:
    """Validate every item, hand off the valid ones in one round trip, report each.

    An invalid item gets its own problem and does not stop the others; so does an item
    over the client's rate limit (each item counts as one request). Also returns the
    longest wait, in ms, a rate-limited item was told (0 if none was). If the round trip
    fails as a whole, ``UnavailableError`` propagates (the whole request is a 503).
    """
    results: list[BatchItem | None] = [None] * len(items)
    valid: list[tuple[int, Transaction]] = []
    for index, raw in enumerate(items):
        try:
            txn = validate_request(
                decode_transaction(bytes(raw), res.limits),
                client_id=client,
                received_at_ms=received_at_ms,
                defaults=res.defaults,
            )
        except (FieldError, msgspec.DecodeError, MalformedBody) as e:
            results[index] = _error(index, None, e)
        else:
            valid.append((index, txn))
    try:
        handed = await res.handoff.submit_many([txn for _, txn in valid])
    except UnavailableError:
        metrics.rejected(metrics.REASON_UNAVAILABLE, len(valid))
        raise
    txn_ids: list[str] = msgspec.to_builtins([txn.txn_id for _, txn in valid])  # in C
    for (index, _), txn_id, outcome in zip(valid, txn_ids, handed, strict=True):
        results[index] = _result(index, txn_id, outcome)
    final = [item for item in results if item is not None]
    _count(final)
    return BatchResult(final), max((h.retry_after_ms for h in handed), default=0)


def _error(index: int, txn_id: str | None, exc: Exception) -> BatchItem:
    problem, _ = problem_for(exc)
    return BatchItem(index=index, txn_id=txn_id, status="error", error=problem)


def _result(index: int, txn_id: str, handed: HandOffResult) -> BatchItem:
    match handed.outcome:
        case "accepted":
            return BatchItem(index=index, txn_id=txn_id, status="accepted")
        case "duplicate":
            return BatchItem(index=index, txn_id=txn_id, status="duplicate")
        case "conflict":
            return _error(index, txn_id, ConflictError(f"txn_id {txn_id} already used"))
        case "limited":
            return _error(index, txn_id, RateLimited(handed.retry_after_ms))
    return _error(index, txn_id, UnavailableError("Redis refused the transaction"))


_REASON_BY_STATUS = {
    400: metrics.REASON_MALFORMED,
    409: metrics.REASON_CONFLICT,
    429: metrics.REASON_RATE_LIMITED,
    503: metrics.REASON_UNAVAILABLE,
}


def _count(items: list[BatchItem]) -> None:
    # Tallied first: one increment per counter, not one per item (each takes a lock).
    tally: Counter[str] = Counter()
    for item in items:
        if item.status != "error":
            tally[item.status] += 1
        elif item.error is not None:
            tally[_REASON_BY_STATUS.get(item.error.status, metrics.REASON_INVALID)] += 1
    for key, count in tally.items():
        if key == "accepted":
            metrics.TRANSACTIONS_ENQUEUED.inc(count)
        elif key == "duplicate":
            metrics.TRANSACTIONS_DUPLICATE.inc(count)
        else:
            metrics.rejected(key, count)
