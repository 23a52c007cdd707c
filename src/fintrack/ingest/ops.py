"""Operations endpoints, without auth: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any, Final, Literal

import msgspec
import psycopg
from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec
from litestar.plugins.prometheus import PrometheusController
from prometheus_client import CONTENT_TYPE_LATEST
from redis.exceptions import RedisError

from fintrack.ingest.state import resources_of

_CHECK_TIMEOUT_S: Final = 1.0

Check = Literal["ok", "unavailable"]


class Readiness(msgspec.Struct, frozen=True):
    """Whether the api can take traffic, and the state of each dependency."""

    status: Literal["ready", "unavailable"]
    redis: Check
    postgres: Check


@get("/health", tags=["operations"], summary="Liveness")
async def health() -> dict[str, str]:
    """200 while the process serves requests."""
    return {"status": "alive"}


@get(
    "/ready",
    tags=["operations"],
    summary="Readiness",
    responses={503: ResponseSpec(Readiness, description="A dependency is unreachable.")},
)
async def ready(request: Request[Any, Any, Any]) -> Response[Readiness]:
    """200 when Redis answers PING and PostgreSQL ``SELECT 1``; else 503 naming which."""
    redis_ok, postgres_ok = await asyncio.gather(_redis_ok(request), _postgres_ok(request))
    state = Readiness(
        status="ready" if redis_ok and postgres_ok else "unavailable",
        redis="ok" if redis_ok else "unavailable",
        postgres="ok" if postgres_ok else "unavailable",
    )
    return Response(state, status_code=200 if state.status == "ready" else 503)


async def _redis_ok(request: Request[Any, Any, Any]) -> bool:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            return bool(await resources_of(request).redis.ping())
    except (RedisError, OSError, TimeoutError):
        return False


async def _postgres_ok(request: Request[Any, Any, Any]) -> bool:
    try:
        async with (
            asyncio.timeout(_CHECK_TIMEOUT_S),
            resources_of(request).pool.connection(timeout=_CHECK_TIMEOUT_S) as conn,
        ):
            await conn.execute("SELECT 1")
    except (psycopg.Error, TimeoutError):
        return False
    return True


class MetricsController(PrometheusController):
    """``/metrics`` in the Prometheus text format (multiprocess-aware, by Litestar)."""

    path = "/metrics"

    # Re-declared only so the OpenAPI document names the real media type.
    @get(media_type=CONTENT_TYPE_LATEST, tags=["operations"], summary="Prometheus metrics")
    async def get(self) -> Response[bytes]:
        response: Response[bytes] = await PrometheusController.get.fn(self)
        return response
