"""The ingest api (``fintrack run api``): the app factory and its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import version

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from redis.exceptions import RedisError

from fintrack.config import Settings
from fintrack.core.children import stop_with_parent_process
from fintrack.core.db import open_pool
from fintrack.core.heap import settle_after_startup
from fintrack.core.httpedge import API_HEADERS, allowed_methods, guard_http
from fintrack.core.rsgi import RSGIAdapter
from fintrack.core.streams import redis_client
from fintrack.ingest.admin import BlocklistController
from fintrack.ingest.fastpath import FastSubmissions
from fintrack.ingest.handoff import SCRIPT, Coalescer, HandOff
from fintrack.ingest.keyring import KeyRing
from fintrack.ingest.keys import KeysController
from fintrack.ingest.limits import limits_from
from fintrack.ingest.openapi import COMPONENTS, describe
from fintrack.ingest.ops import MetricsController, health, ready
from fintrack.ingest.problems import exception_handlers
from fintrack.ingest.ratelimit import RateGate
from fintrack.ingest.requestlog import log_requests
from fintrack.ingest.routes import TransactionController
from fintrack.ingest.state import Resources, app_resources, defaults_from
from fintrack.ingest.waiters import BLOCK_MS, Waiters
from fintrack.log import flush_logs

# Few retries: a client waiting on a 202 is better served by a quick 503 and its own retry.
_REDIS_RETRIES = 1


@contextlib.asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    redis = redis_client(settings, retries=_REDIS_RETRIES)
    tail_redis = redis_client(settings, block_ms=BLOCK_MS, retries=_REDIS_RETRIES)
    pool = await open_pool(settings)
    handoff = HandOff(redis, settings)
    coalescer = Coalescer(handoff, max_batch=settings.max_batch_items)
    waiters = Waiters(tail_redis, settings.event_stream)
    keyring = KeyRing(settings, pool, redis)
    with contextlib.suppress(RedisError, OSError):
        await redis.script_load(SCRIPT)  # saves the first request a NOSCRIPT retry
    coalescer.start()
    await keyring.start()
    app.state.resources = Resources(
        settings=settings,
        defaults=defaults_from(settings),
        redis=redis,
        pool=pool,
        handoff=handoff,
        coalescer=coalescer,
        waiters=waiters,
        keyring=keyring,
        rate_gate=RateGate(redis, settings),
        limits=limits_from(settings),
    )
    settle_after_startup()
    try:
        yield
    finally:
        await keyring.stop()
        await coalescer.stop()
        await waiters.stop()
        await pool.close()
        await tail_redis.aclose()
        await redis.aclose()
        # Granian's worker processes end without running atexit: the last request lines.
        flush_logs()


def create_app(settings: Settings | None = None) -> Litestar:
    """The ingest api for ``settings`` (default: read from the environment, as Granian's
    workers do, which then also configure logging)."""
    if settings is None:
        from fintrack.log import configure_logging

        settings = Settings.from_env()
        configure_logging(settings)
    settings.require("redis_url", "database_url")
    app = Litestar(
        route_handlers=[
            TransactionController,
            BlocklistController,
            KeysController,
            health,
            ready,
            MetricsController,
        ],
        lifespan=[_lifespan],
        state=State({"settings": settings}),
        exception_handlers=exception_handlers,
        request_max_body_size=settings.max_body_bytes,
        cors_config=cors_config(settings),
        openapi_config=OpenAPIConfig(
            title="FinTrack-Sentinel ingest API",
            version=version("fintrack-sentinel"),
            path="/schema",
            render_plugins=[JsonRenderPlugin()],
            components=COMPONENTS,
            use_handler_docstrings=True,
        ),
    )
    describe(app.openapi_schema, settings)
    # Outside Litestar's middleware stack, so unrouted and refused requests get both too;
    # it also records the request metrics (a middleware would cost more per request).
    app.asgi_handler = log_requests(
        guard_http(
            app.asgi_handler,
            max_header_bytes=settings.max_header_bytes,
            headers=API_HEADERS,
            allow=allowed_methods(app),
        )
    )
    return app


def create_rsgi_app() -> RSGIAdapter:
    """``create_app()`` (settings from the environment) served through Granian's RSGI
    interface, which costs less per request than its ASGI one (see ``core.rsgi``)."""
    stop_with_parent_process()  # never outlive Granian's main process
    app = create_app()
    settings: Settings = app.state.settings
    return RSGIAdapter(
        app,
        max_body_bytes=settings.max_body_bytes,
        # Ordinary submissions are answered before Litestar and its wrappers (see fastpath).
        shortcut=FastSubmissions(settings, lambda: app_resources(app)),
    )


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS for the configured origins (FINTRACK_CORS_ORIGINS); None (off) when empty.

    Clients authenticate with headers, never cookies, so credentials are not allowed."""
    origins = settings.cors_origin_list
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type", "Prefer", "X-Request-ID"],
        expose_headers=["Location", "Retry-After", "X-Request-ID", "Preference-Applied"],
        allow_credentials=False,
        max_age=600,
    )
