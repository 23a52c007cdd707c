"""One structured log line per request, with a request id bound for everything logged.

This wraps the whole Litestar ASGI handler rather than sitting in its middleware stack,
because Litestar runs middleware only for routed paths: 404s and 405s must be logged too.
Headers are never logged (they carry credentials); handlers bind ``txn_id`` when known.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Final

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("fintrack.ingest.access")

REQUEST_ID_HEADER: Final = b"x-request-id"
_VALID_ID = re.compile(rb"^[\w.-]{1,64}$")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER and _VALID_ID.match(value):
            return value.decode()
    return uuid.uuid4().hex


def log_requests(app: ASGIApp) -> ASGIApp:
    """``app`` wrapped to log one line per HTTP request and echo ``X-Request-ID``."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = scope["method"]
        request_id = _request_id(scope)
        structlog.contextvars.clear_contextvars()
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
            log.info(
                "request",
                method=method,
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
            structlog.contextvars.clear_contextvars()

    return logged
