"""The notifier role: live security feed (SSE) and admin dashboard, on port 8002.

``create_app`` is the factory Granian calls (with no arguments) in each worker process.
Each process runs one events-stream reader that fans out to all its feed clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Final

import structlog
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.exceptions import HTTPException
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from fintrack.config import Settings
from fintrack.core.children import stop_with_parent_process
from fintrack.core.db import open_pool
from fintrack.core.heap import settle_after_startup
from fintrack.core.httpedge import allowed_methods, guard_http
from fintrack.core.streams import redis_client
from fintrack.notify.assets import asset
from fintrack.notify.frames import EventId
from fintrack.notify.history import History
from fintrack.notify.hub import Hub, stream_last_id
from fintrack.notify.openapi import openapi_document
from fintrack.notify.problems import http_problem, internal_problem
from fintrack.notify.routes import (
    Notifier,
    events,
    health,
    index,
    login,
    login_page,
    logout,
    ready,
)
from fintrack.notify.session import session_key
from fintrack.notify.shutdown import on_stop_signal

log = structlog.get_logger(__name__)

_READER_BLOCK_MS: Final = 2_000

SECURITY_HEADERS: Final = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def _lifespan(settings: Settings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if settings.auth_enabled and not settings.session_secret:
            log.warning(
                "no session secret: sign-in cookies are signed with a key derived from the "
                "admin token digests alone, so anyone who can read FINTRACK_ADMIN_TOKENS can "
                "forge one; set FINTRACK_SESSION_SECRET (32+ random characters)"
            )
        redis = redis_client(settings)
        # The reader blocks on XREAD: it gets a connection of its own (see redis_client).
        reader = redis_client(settings, block_ms=_READER_BLOCK_MS)
        pool = await open_pool(settings, min_size=1, max_size=10)
        history = History(redis, pool, settings.event_stream)

        async def start_position() -> EventId:
            # The newest id ever published. Redis keeps it across trims; if the stream is
            # gone (Redis lost its data), the archive knows the last one.
            last = await stream_last_id(reader, settings.event_stream)
            if last is None:
                last = await history.last_archived()
            return last if last is not None else (0, 0)

        hub = Hub(
            reader,
            settings.event_stream,
            start_position,
            max_clients=settings.sse_max_clients,
            client_buffer=settings.sse_client_buffer,
            block_ms=_READER_BLOCK_MS,
            heartbeat_s=settings.sse_heartbeat_s,
        )
        hub.start()
        app.state.notifier = Notifier(
            settings=settings,
            hub=hub,
            history=history,
            redis=redis,
            pool=pool,
            session_key=session_key(settings.admin_token_hashes, settings.session_secret),
        )
        settle_after_startup()
        try:
            with on_stop_signal(hub.drain):
                yield
        finally:
            await hub.stop()
            await reader.aclose()
            await redis.aclose()
            await pool.close()

    return lifespan


def create_app(settings: Settings | None = None) -> Litestar:
    """The notifier app. Without ``settings`` they come from ``FINTRACK_*`` variables."""
    if settings is None:
        settings = Settings.from_env()
        # Called by Granian in a fresh worker process: set up logging there too, and
        # never outlive Granian's main process.
        from fintrack.log import configure_logging

        configure_logging(settings)
        stop_with_parent_process()
    settings.require("redis_url", "database_url")
    prometheus = PrometheusConfig(
        app_name="fintrack-notifier",
        prefix="fintrack_notifier_http",
        # Feed responses last minutes by design: they would swamp the latency histograms.
        exclude=["^/events"],
        group_path=True,
    )
    app = Litestar(
        route_handlers=[
            openapi_document,
            events,
            index,
            login_page,
            login,
            logout,
            health,
            ready,
            PrometheusController,
            asset,
        ],
        lifespan=[_lifespan(settings)],
        middleware=[prometheus.middleware],
        exception_handlers={HTTPException: http_problem, Exception: internal_problem},
        cors_config=cors_config(settings),
        openapi_config=None,  # written out in notify/openapi.py, served by openapi_document
    )
    # Outside Litestar: oversized headers are refused before routing and authentication.
    app.asgi_handler = guard_http(
        app.asgi_handler,
        max_header_bytes=settings.max_header_bytes,
        headers=SECURITY_HEADERS,
        allow=allowed_methods(app),
    )
    return app


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS for the configured origins (FINTRACK_CORS_ORIGINS); None (off) when empty.

    Feed clients elsewhere authenticate with a bearer token; the session cookie is
    SameSite=Strict and never sent cross-site, so credentials are not allowed."""
    origins = settings.cors_origin_list
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET"],
        allow_headers=["Authorization", "Last-Event-ID"],
        allow_credentials=False,
        max_age=600,
    )
