"""HTTP handlers of the notifier: the event feed, browser sign-in, the dashboard page, and
health. What they share (hub, history, pools, settings) lives on ``app.state.notifier``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

import psycopg
import structlog
from litestar import Request, get, post
from litestar.datastructures import Cookie
from litestar.response import File, Redirect, Response
from litestar.types import ASGIApp
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from redis.exceptions import RedisError

from fintrack.config import Settings
from fintrack.core import audit
from fintrack.core.auth import identify
from fintrack.notify import metrics
from fintrack.notify.feed import FeedOptions, feed_response
from fintrack.notify.filters import FilterError, parse_filter
from fintrack.notify.frames import EventId, EventIdError, parse_event_id
from fintrack.notify.history import History
from fintrack.notify.hub import Hub, TooManyClients
from fintrack.notify.problems import ProblemError, unauthorized
from fintrack.notify.session import COOKIE, SESSION_TTL_S, Verdict, authenticate, issue_session

log = structlog.get_logger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
_PAGE_HEADERS: Final = {"Cache-Control": "no-store"}
_READY_TIMEOUT_S: Final = 2.0
_HUB_WAIT_S: Final = 5.0
_MAX_FORM_BYTES: Final = 4_096


@dataclass(frozen=True, slots=True)
class Notifier:
    """Everything the handlers need, built by the app's lifespan."""

    settings: Settings
    hub: Hub
    history: History
    redis: Redis
    pool: AsyncConnectionPool[Any]
    session_key: bytes


def _notifier(request: Request[Any, Any, Any]) -> Notifier:
    return cast(Notifier, request.app.state.notifier)


def _remote(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else ""


def _verdict(request: Request[Any, Any, Any], notifier: Notifier) -> Verdict:
    settings = notifier.settings
    return authenticate(
        authorization=request.headers.get("authorization"),
        cookie=request.cookies.get(COOKIE),
        admin_digests=settings.admin_token_hashes,
        key=notifier.session_key,
        now=time.time(),
        open_access=settings.insecure_open,
    )


async def _audit(notifier: Notifier, *, actor: str, action: str, remote: str, outcome: str) -> None:
    """Best effort: a refused login stays refused if PostgreSQL is down; the miss is logged."""
    await audit.record(
        notifier.pool, actor=actor, action=action, target="notifier", remote=remote,
        outcome=outcome,
    )  # fmt: skip


async def _refused(request: Request[Any, Any, Any], notifier: Notifier, verdict: Verdict) -> None:
    """Count and log a refused credential (never the credential itself)."""
    failure = verdict.failure or "invalid"
    metrics.AUTH_FAILURES.labels(reason=failure).inc()
    if failure != "missing":
        remote = _remote(request)
        log.warning(
            "admin credential refused", reason=failure, path=request.url.path, remote=remote
        )
        await _audit(
            notifier,
            actor="unknown",
            action=f"auth {request.url.path}",
            remote=remote,
            outcome=f"refused: {failure}",
        )


def _last_event_id(request: Request[Any, Any, Any]) -> EventId | None:
    # The header wins over the query parameter, but both are checked: a malformed value is
    # refused wherever it is (as the OpenAPI document says).
    found = None
    for param, raw in (
        ("last_event_id", request.query_params.get("last_event_id")),
        ("Last-Event-ID", request.headers.get("last-event-id")),
    ):
        if raw is None or not raw.strip():
            continue
        try:
            found = parse_event_id(raw.strip())
        except EventIdError as e:
            raise ProblemError(400, "bad-last-event-id", str(e), param=param) from e
    return found


@get("/events")
async def events(request: Request[Any, Any, Any]) -> ASGIApp:
    """The live security feed (SSE). Resumes after ``Last-Event-ID``; filters by query."""
    notifier = _notifier(request)
    verdict = _verdict(request, notifier)
    if verdict.admin is None:
        await _refused(request, notifier, verdict)
        raise unauthorized("an admin token (Authorization: Bearer) or a session is required")
    after = _last_event_id(request)
    try:
        wanted = parse_filter(
            {key: request.query_params.getall(key) for key in request.query_params}
        )
    except FilterError as e:
        raise ProblemError(400, "bad-filter", str(e), param=e.param) from e
    settings = notifier.settings
    retry_after = str(max(1, settings.sse_retry_ms // 1000))
    if not await notifier.hub.wait_ready(_HUB_WAIT_S):
        raise ProblemError(
            503,
            "feed-unavailable",
            "the event stream can't be read right now",
            headers={"Retry-After": retry_after},
        )
    options = FeedOptions(
        settings.sse_retry_ms,
        settings.sse_heartbeat_s,
        settings.sse_lifetime_s,
        admin=verdict.admin,
        remote=_remote(request),
    )
    try:
        return feed_response(notifier.hub, notifier.history, wanted, after, options)
    except TooManyClients:
        raise ProblemError(
            503,
            "too-many-clients",
            "this server is at its limit of feed clients; retry later",
            headers={"Retry-After": retry_after},
        ) from None


@get("/")
async def index(request: Request[Any, Any, Any]) -> File | Redirect:
    """The dashboard page, for a signed-in admin; anyone else is sent to sign in."""
    notifier = _notifier(request)
    if _verdict(request, notifier).admin is None:
        return Redirect("/login", status_code=303)
    return File(
        STATIC_DIR / "index.html",
        content_disposition_type="inline",
        media_type="text/html; charset=utf-8",
        headers=_PAGE_HEADERS,
    )


@get("/login")
async def login_page(request: Request[Any, Any, Any]) -> File | Redirect:
    """The sign-in form (straight to the dashboard when already signed in)."""
    if _verdict(request, _notifier(request)).admin is not None:
        return Redirect("/", status_code=303)
    return File(
        STATIC_DIR / "login.html",
        content_disposition_type="inline",
        media_type="text/html; charset=utf-8",
        headers=_PAGE_HEADERS,
    )


def _check_origin(request: Request[Any, Any, Any]) -> None:
    # Forms only from our own pages: a cross-site POST carries a foreign Origin.
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise ProblemError(403, "cross-origin", "cross-site form posts are refused")


def _is_https(request: Request[Any, Any, Any]) -> bool:
    # Behind a TLS-terminating load balancer the scheme arrives in X-Forwarded-Proto.
    forwarded = request.headers.get("x-forwarded-proto", "")
    return request.url.scheme == "https" or forwarded.split(",")[0].strip() == "https"


@post("/login", request_max_body_size=_MAX_FORM_BYTES, status_code=303)
async def login(request: Request[Any, Any, Any]) -> Redirect:
    """Exchange an admin token (form field ``token``) for a 12-hour session cookie."""
    _check_origin(request)
    notifier = _notifier(request)
    form = await request.form()
    token = form.get("token")
    remote = _remote(request)
    admin = identify(
        token if isinstance(token, str) else None, notifier.settings.admin_token_hashes
    )
    if admin is None:
        metrics.AUTH_FAILURES.labels(reason="invalid").inc()
        log.warning("sign-in refused", remote=remote)
        await _audit(notifier, actor="unknown", action="login", remote=remote, outcome="refused")
        return Redirect("/login", status_code=303, query_params={"error": "1"})
    log.info("signed in", admin=admin, remote=remote)
    await _audit(notifier, actor=admin, action="login", remote=remote, outcome="ok")
    cookie = Cookie(
        key=COOKIE,
        value=issue_session(notifier.session_key, admin, time.time()),
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_is_https(request),
    )
    return Redirect("/", status_code=303, cookies=[cookie])


@post("/logout", request_max_body_size=_MAX_FORM_BYTES, status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Redirect:
    """End the browser session (the cookie is cleared) and go back to sign-in."""
    _check_origin(request)
    cookie = Cookie(
        key=COOKIE,
        value="",
        max_age=0,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_is_https(request),
    )
    return Redirect("/login", status_code=303, cookies=[cookie])


@get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/ready")
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Readiness: Redis and PostgreSQL answer, and the feed reader is running."""
    notifier = _notifier(request)
    redis_ok, pg_ok = await asyncio.gather(_redis_ok(notifier.redis), _pg_ok(notifier.pool))
    checks = {
        "redis": "ok" if redis_ok else "unavailable",
        "postgres": "ok" if pg_ok else "unavailable",
        "feed": "ok" if notifier.hub.running else "not running",
    }
    ok = all(value == "ok" for value in checks.values())
    body: dict[str, Any] = {"status": "ready" if ok else "not ready", "checks": checks}
    body["clients"] = notifier.hub.clients
    return Response(body, status_code=200 if ok else 503, headers={"Cache-Control": "no-store"})


async def _redis_ok(redis: Redis) -> bool:
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S):
            return bool(await redis.ping())
    except (RedisError, OSError, TimeoutError):
        return False


async def _pg_ok(pool: AsyncConnectionPool[Any]) -> bool:
    try:
        async with asyncio.timeout(_READY_TIMEOUT_S), pool.connection(_READY_TIMEOUT_S) as conn:
            await conn.execute("SELECT 1")
    except (psycopg.Error, TimeoutError):
        return False
    return True
