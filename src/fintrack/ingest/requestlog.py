"""One structured log line per request, with a request id bound for everything logged, and
the per-request Prometheus metrics (count and latency by route and status).

This wraps the whole Litestar ASGI handler rather than sitting in its middleware stack,
because Litestar runs middleware only for routed paths: 404s and 405s must be logged too.
Headers are never logged (they carry credentials); handlers bind ``txn_id`` when known.
It runs on every request, so it stays cheap: request ids come from a counter, the only
context bound is the request id (handlers bind more into the same request's context), and
JSON lines are written by ``fintrack.log.hot_lines`` rather than structlog's chain.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from typing import Final

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from fintrack.ingest import metrics
from fintrack.log import hot_lines

log = structlog.get_logger("fintrack.ingest.access")

REQUEST_ID_HEADER: Final = b"x-request-id"
_VALID_ID = re.compile(rb"^[\w.-]{1,64}$")
# Everything bound to a request's log context: here, and by the handlers (txn_id).
_BOUND: Final = ("request_id", "txn_id")
_METRICS_PATH: Final = "/metrics"


class _RequestIds:
    """Request ids unique across processes: a random per-process prefix and a counter.

    A uuid4 per request costs more than the rest of the id handling together; the random
    prefix (renewed in a forked child) keeps ids from different processes apart."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = secrets.token_hex(6)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


_ids = _RequestIds()


def request_id_for(sent: bytes | None) -> str:
    """The client's ``X-Request-ID`` if it ``sent`` a valid one, else a new id."""
    if sent is not None and _VALID_ID.match(sent):
        return sent.decode()
    return _ids.next()


def _sent_id(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            return value
    return None


def record_request(
    method: str, path: str, template: str | None, status: int, duration_s: float
) -> None:
    """Count an answered request in the metrics, write its log line and end its log
    context (what ``log_requests`` does after each request; the api's shortcut for
    submissions calls it too)."""
    # Litestar sets the route template once routed; unrouted paths are not counted
    # (raw paths from clients would be unbounded label values), nor scrapes.
    if template is not None and template != _METRICS_PATH:
        metrics.observe_request(method, template, status, duration_s)
    line = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": round(duration_s * 1000, 3),
    }
    writer = hot_lines()
    if writer is None:
        log.info("request", **line)
    else:
        writer.info("request", line)
    structlog.contextvars.unbind_contextvars(*_BOUND)


def log_requests(app: ASGIApp) -> ASGIApp:
    """``app`` wrapped to log one line per HTTP request, echo ``X-Request-ID`` and count
    routed requests in the request metrics."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        request_id = request_id_for(_sent_id(scope))
        # Unbinding by name afterwards is cheaper than clearing (which walks every context
        # variable of the process) before and after each request.
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500  # if the app dies before answering, that is what the client sees

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            record_request(
                scope["method"],
                scope["path"],
                scope.get("path_template"),
                status,
                time.perf_counter() - started,
            )

    return logged
