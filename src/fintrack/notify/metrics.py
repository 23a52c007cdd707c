"""Prometheus metrics of the notifier (HTTP request metrics come from Litestar's plugin)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

CLIENTS = Gauge(
    "fintrack_notifier_sse_clients",
    "Feed (SSE) clients connected to this process.",
)


class EventsSent(Collector):
    """Events written to feed clients: counted on every write of every feed, so a plain
    integer (one event loop per process) read at scrape time, not a ``Counter``, whose
    lock and checks per increment were a tenth of the notifier's delivery CPU."""

    NAME = "fintrack_notifier_events_sent"

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int) -> None:
        self.value += amount

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            self.NAME,
            "Events written to feed clients (one per client per event, live and replayed).",
            value=self.value,
        )


EVENTS_SENT = EventsSent()
REGISTRY.register(EVENTS_SENT)
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
