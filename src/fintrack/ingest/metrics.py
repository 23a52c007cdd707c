"""Prometheus metrics of the api: requests by route and status, and the ingest counters.

Metrics live in the process-wide default registry and are created once, at import: building
the app twice (tests do) must not register them twice. Label values come from small fixed
sets, never from client input, so a hostile client cannot blow up the series count.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Histogram

PREFIX: Final = "fintrack_api"
APP_NAME: Final = "fintrack-api"

# Names and labels as Litestar's Prometheus middleware had them (dashboards keep working);
# observed once per request by ``requestlog``, which costs a fraction of that middleware.
_REQUEST_LABELS: Final = ("method", "path", "status_code", "app_name")
REQUESTS = Counter(f"{PREFIX}_requests_total", "Total requests", _REQUEST_LABELS)
REQUEST_SECONDS = Histogram(
    f"{PREFIX}_request_duration_seconds", "Request duration, in seconds", _REQUEST_LABELS
)

TRANSACTIONS_ENQUEUED = Counter(
    f"{PREFIX}_transactions_enqueued_total",
    "Transactions durably handed off to the transactions stream.",
)
TRANSACTIONS_DUPLICATE = Counter(
    f"{PREFIX}_transactions_duplicate_total",
    "Replays of an already accepted txn_id (same client, same body): nothing enqueued.",
)
TRANSACTIONS_REJECTED = Counter(
    f"{PREFIX}_transactions_rejected_total",
    "Transactions refused, by reason.",
    ["reason"],
)
HANDOFF_SECONDS = Histogram(
    f"{PREFIX}_handoff_seconds",
    "Duration of one hand-off round trip to Redis.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
HANDOFF_BATCH_SIZE = Histogram(
    f"{PREFIX}_handoff_batch_size",
    "Transactions sent in one hand-off round trip.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)

# Rejection reasons: the label values `TRANSACTIONS_REJECTED` may carry.
REASON_MALFORMED: Final = "malformed"  # not JSON, or nested too deeply
REASON_INVALID: Final = "invalid"  # valid JSON, but a field is wrong
REASON_TOO_LARGE: Final = "too_large"  # body or batch over the limit
REASON_CONFLICT: Final = "conflict"  # txn_id already used by another body or client
REASON_UNAVAILABLE: Final = "unavailable"  # Redis could not take it
REASON_RATE_LIMITED: Final = "rate_limited"  # the client's request budget is used up


def rejected(reason: str, count: int = 1) -> None:
    """Count ``count`` refused transactions under ``reason`` (one of the REASON_* values)."""
    TRANSACTIONS_REJECTED.labels(reason=reason).inc(count)


# (method, route template, status) -> the labelled children: `labels()` is the costly part.
_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
# Routes and methods are finite, statuses nearly so; this only guards against surprises.
_MAX_CHILDREN: Final = 1024


def observe_request(method: str, path_template: str, status: int, duration_s: float) -> None:
    """Count one answered request to the route ``path_template`` and record its latency."""
    key = (method, path_template, status)
    children = _children.get(key)
    if children is None:
        values = (method, path_template, str(status), APP_NAME)
        children = (REQUESTS.labels(*values), REQUEST_SECONDS.labels(*values))
        if len(_children) < _MAX_CHILDREN:
            _children[key] = children
    children[0].inc()
    children[1].observe(duration_s)
