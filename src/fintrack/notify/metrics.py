"""Prometheus metrics of the notifier (HTTP request metrics come from Litestar's plugin)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CLIENTS = Gauge(
    "fintrack_notifier_sse_clients",
    "Feed (SSE) clients connected to this process.",
)
EVENTS_SENT = Counter(
    "fintrack_notifier_events_sent_total",
    "Events written to feed clients (one per client per event, live and replayed).",
)
CLIENTS_DROPPED = Counter(
    "fintrack_notifier_clients_dropped_total",
    "Feed clients disconnected by the server, by reason (overflow: too slow to keep up).",
    ["reason"],
)
CLIENTS_REJECTED = Counter(
    "fintrack_notifier_clients_rejected_total",
    "Feed connections refused because the process was at its client limit.",
)
READER_ERRORS = Counter(
    "fintrack_notifier_reader_errors_total",
    "Failed reads of the events stream (the reader backs off and resumes).",
)
AUTH_FAILURES = Counter(
    "fintrack_notifier_auth_failures_total",
    "Requests refused for a missing, invalid or expired admin credential.",
    ["reason"],
)
REPLAY_ERRORS = Counter(
    "fintrack_notifier_replay_errors_total",
    "Feed streams ended early because history could not be read.",
)
