"""Handing one submitted transaction off, shared by the Litestar handler and the fast path:
the outcome of the hand-off as an answer or an error, and the rejection metrics."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import msgspec
from litestar.exceptions.http_exceptions import RequestEntityTooLarge

from fintrack.core.errors import ConflictError, FieldError, UnavailableError
from fintrack.core.models import Transaction
from fintrack.ingest import metrics
from fintrack.ingest.handoff import HandOffResult
from fintrack.ingest.problems import MalformedBody
from fintrack.ingest.ratelimit import RateLimited
from fintrack.ingest.state import Resources


def now_ms() -> int:
    """Wall-clock milliseconds: a transaction's ``received_at``."""
    return time.time_ns() // 1_000_000


def location(txn_id: str) -> str:
    """Where an accepted transaction can be read back."""
    return f"/transactions/{txn_id}"


@contextlib.contextmanager
def counting_rejections() -> Iterator[None]:
    """Count a refused transaction by reason, then let the error reach the handler."""
    try:
        yield
    except (msgspec.ValidationError, FieldError):  # ValidationError is a DecodeError too
        metrics.rejected(metrics.REASON_INVALID)
        raise
    except (msgspec.DecodeError, MalformedBody):
        metrics.rejected(metrics.REASON_MALFORMED)
        raise
    except RequestEntityTooLarge:
        metrics.rejected(metrics.REASON_TOO_LARGE)
        raise
    except ConflictError:
        metrics.rejected(metrics.REASON_CONFLICT)
        raise
    except UnavailableError:
        metrics.rejected(metrics.REASON_UNAVAILABLE)
        raise
    except RateLimited:
        metrics.rejected(metrics.REASON_RATE_LIMITED)
        raise


async def hand_off(res: Resources, txn: Transaction) -> HandOffResult:
    """Hand ``txn`` off (coalesced with concurrent submissions); an accepted or repeated
    submission returns, a refused one raises the error its answer is made from."""
    result = await res.coalescer.submit(txn)
    match result.outcome:
        case "accepted":
            metrics.TRANSACTIONS_ENQUEUED.inc()
        case "duplicate":
            metrics.TRANSACTIONS_DUPLICATE.inc()
        case "conflict":
            raise ConflictError(
                f"txn_id {txn.txn_id} was already used with another body or by another client"
            )
        case "limited":
            raise RateLimited(result.retry_after_ms)
        case "failed":
            raise UnavailableError("Redis refused the transaction")
    return result
