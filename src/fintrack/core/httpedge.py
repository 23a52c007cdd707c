"""The outer edge of the HTTP roles: a request-header limit and security headers.

``guard_http`` wraps a whole ASGI app, outside Litestar's router and middleware, so 404s,
405s, static files and errors get the same treatment as routed answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import msgspec
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

# For JSON APIs: nothing may be loaded, framed or sniffed, and nothing cached by the way.
API_HEADERS: Final = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def headers_size(headers: Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]]) -> int:
    """Bytes of every request header name and value (what the limit counts); as ``str``
    (RSGI's), header bytes are latin-1, one character each."""
    return sum(len(name) + len(value) for name, value in headers)


def _too_large(limit: int) -> tuple[Message, Message]:
    body = msgspec.json.encode(
        {
            "type": "about:blank",
            "title": "Request Header Fields Too Large",
            "status": 431,
            "detail": f"the request headers exceed {limit} bytes",
        }
    )
    start: Message = {
        "type": "http.response.start",
        "status": 431,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


def allowed_methods(app: Litestar) -> dict[str, bytes]:
    """{path template: ``Allow`` header value} of every HTTP route of ``app``."""
    return {
        route.path_format: ", ".join(sorted(route.methods)).encode()
        for route in app.routes
        if isinstance(route, HTTPRoute)
    }


def _correct_allow(message: HTTPResponseStartEvent, methods: bytes | None) -> None:
    if methods is not None:
        message["headers"] = [
            (name, methods if name.lower() == b"allow" else value)
            for name, value in message["headers"]
        ]


def guard_http(
    app: ASGIApp,
    *,
    max_header_bytes: int,
    headers: Mapping[str, str],
    allow: Mapping[str, bytes] | None = None,
) -> ASGIApp:
    """``app`` refusing requests whose headers exceed ``max_header_bytes`` (431, before any
    routing or authentication) and adding ``headers`` to every response that lacks them.

    ``allow`` (see ``allowed_methods``) corrects the ``Allow`` header of Litestar's
    automatic OPTIONS answers: for a path whose methods come from several handlers it
    lists only the first handler's methods (its closure keeps a stale route)."""
    extra = [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                message["headers"] = [
                    *message.get("headers", ()),
                    *((name, value) for name, value in extra if name not in present),
                ]
                if allow and scope["method"] == "OPTIONS" and b"allow" in present:
                    _correct_allow(message, allow.get(scope.get("path_template", "")))
            await send(message)

        if headers_size(scope.get("headers", ())) > max_header_bytes:
            for message in _too_large(max_header_bytes):
                await send_with_headers(message)
            return
        await app(scope, receive, send_with_headers)

    return guarded
