"""The notifier's SSE protocol, auth and HTTP surface, through a real server process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from notify_support import (
    SSEParser,
    admin_headers,
    decision_events,
    open_feed,
    publish,
    sse_events,
)
from redis.asyncio import Redis

from conftest import ADMIN_TOKEN, RoleProcess
from fintrack.config import Settings
from fintrack.core.events import event_encoder

FAST = {"FINTRACK_SSE_HEARTBEAT_S": "0.2", "FINTRACK_SSE_RETRY_MS": "1500"}
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@pytest.fixture
def notifier(start_role: Callable[..., RoleProcess], settings: Settings) -> RoleProcess:
    return start_role("notifier", settings, **FAST)


async def test_events_carry_stream_id_kind_and_exact_data(
    notifier: RoleProcess, settings: Settings, redis_client: Redis
) -> None:
    """Each SSE event has the stream entry id, the kind as event name, and the data bytes."""
    events = decision_events(2, status="FLAGGED", rules=["velocity"])
    parser = SSEParser()
    async with (
        httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client,
        client.stream("GET", "/events", headers=admin_headers(ADMIN_TOKEN)) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        ids = await publish(settings, redis_client, events)
        got = []
        async with asyncio.timeout(10):
            async for event in sse_events(response, parser):
                got.append(event)
                if len(got) == len(events):
                    break
    assert parser.retry == 1500
    assert [e.id for e in got] == ids
    assert [e.event for e in got] == ["decision", "alert", "decision", "alert"]
    assert [e.data for e in got] == [event_encoder.encode(e).decode() for e in events]


async def test_heartbeats_then_stream_ends_after_lifetime(
    start_role: Callable[..., RoleProcess], settings: Settings
) -> None:
    """A quiet feed sends `: ping` comments and closes by itself after its lifetime."""
    notifier = start_role("notifier", settings, **FAST, FINTRACK_SSE_LIFETIME_S="1.2")
    parser = SSEParser()
    started = time.monotonic()
    async with (
        httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client,
        client.stream("GET", "/events", headers=admin_headers(ADMIN_TOKEN)) as response,
    ):
        async with asyncio.timeout(10):
            body = b"".join([chunk async for chunk in response.aiter_bytes()])
    elapsed = time.monotonic() - started
    assert parser.feed(body) == []
    assert body.startswith(b"retry: 1500\n\n")
    assert parser.comments.count("ping") >= 3
    assert 1.2 <= elapsed < 5


async def test_feed_refuses_missing_or_wrong_credentials(notifier: RoleProcess) -> None:
    """No credential, a wrong token, an API key or a forged cookie get a 401 problem."""
    attempts: list[dict[str, Any]] = [
        {},
        {"headers": {"Authorization": "Bearer not-the-token"}},
        {"headers": {"Authorization": "Basic " + ADMIN_TOKEN}},
        {"headers": {"Cookie": "fintrack_session=alice.9999999999.AAAA"}},
    ]
    async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:
        for attempt in attempts:
            response = await client.get("/events", **attempt)
            assert response.status_code == 401, attempt
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.headers["www-authenticate"].startswith("Bearer")
            problem = response.json()
            assert problem["status"] == 401
            assert problem["type"] == "urn:fintrack:problem:unauthorized"
    assert ADMIN_TOKEN not in notifier.log()


async def test_login_sets_a_session_cookie_that_opens_the_feed(
    notifier: RoleProcess, settings: Settings
) -> None:
    """POST /login with the token sets a strict HttpOnly cookie; logout clears it; both
    the refused and the accepted sign-in are in the audit log."""
    async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:
        page = await client.get("/")
        assert page.status_code == 303
        assert page.headers["location"] == "/login"
        login_page = await client.get("/login")
        assert login_page.status_code == 200
        assert "text/html" in login_page.headers["content-type"]

        wrong = await client.post("/login", data={"token": "wrong"})
        assert wrong.status_code == 303
        assert wrong.headers["location"] == "/login?error=1"
        assert "set-cookie" not in wrong.headers

        signed_in = await client.post("/login", data={"token": ADMIN_TOKEN})
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/"
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith("fintrack_session=alice.")
        lowered = cookie.lower()
        assert "httponly" in lowered
        assert "samesite=strict" in lowered
        assert "path=/" in lowered
        assert "secure" not in lowered  # plain http here
        assert "max-age=43200" in lowered

        dashboard = await client.get("/")
        assert dashboard.status_code == 200
        assert "text/html" in dashboard.headers["content-type"]
        async with client.stream("GET", "/events") as feed:
            assert feed.status_code == 200
            first = await anext(feed.aiter_bytes())
            assert first.startswith(b"retry:")

        out = await client.post("/logout")
        assert out.status_code == 303
        assert out.headers["location"] == "/login"
        assert (await client.get("/")).status_code == 303
        assert (await client.get("/events")).status_code == 401
    assert ADMIN_TOKEN not in notifier.log()
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        cur = await conn.execute(
            "SELECT actor, action, outcome FROM audit_log WHERE action = 'login' ORDER BY id"
        )
        assert await cur.fetchall() == [("unknown", "login", "refused"), ("alice", "login", "ok")]


async def test_login_refuses_cross_site_posts(notifier: RoleProcess) -> None:
    """A login form posted from another origin is refused before the token is looked at."""
    async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:
        response = await client.post(
            "/login", data={"token": ADMIN_TOKEN}, headers={"Origin": "https://evil.example"}
        )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def test_security_headers_on_every_response(notifier: RoleProcess) -> None:
    """Pages, assets, redirects, errors, health and the feed all carry the security headers."""
    async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:
        responses = [
            await client.get("/"),
            await client.get("/login"),
            await client.get("/static/login.js"),
            await client.get("/health"),
            await client.get("/nope"),
            await client.get("/events"),
            await client.get("/metrics"),
        ]
        async with client.stream("GET", "/events", headers=admin_headers(ADMIN_TOKEN)) as feed:
            responses.append(feed)
    assert [r.status_code for r in responses] == [303, 200, 200, 200, 404, 401, 200, 200]
    for response in responses:
        assert response.headers["content-security-policy"] == CSP, response.url
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"


async def test_malformed_resume_id_or_filter_is_a_400_problem(notifier: RoleProcess) -> None:
    """A Last-Event-ID that is not `<ms>-<seq>`, or an impossible filter, gets a 400 problem."""
    bad = [
        ({"Last-Event-ID": "yesterday"}, "", "Last-Event-ID"),
        ({}, "?last_event_id=12-x", "last_event_id"),
        ({}, "?status=MAYBE", "status"),
        ({}, "?severity=huge", "severity"),
        ({}, "?kind=gossip", "kind"),
    ]
    async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:
        for extra, query, param in bad:
            response = await client.get(
                "/events" + query, headers={**admin_headers(ADMIN_TOKEN), **extra}
            )
            assert response.status_code == 400, query
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["param"] == param


async def test_client_limit_answers_503_with_retry_after(
    start_role: Callable[..., RoleProcess], settings: Settings
) -> None:
    """Beyond FINTRACK_SSE_MAX_CLIENTS a feed request gets 503 and Retry-After."""
    notifier = start_role("notifier", settings, **FAST, FINTRACK_SSE_MAX_CLIENTS="2")
    headers = admin_headers(ADMIN_TOKEN)
    async with (
        httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client,
        client.stream("GET", "/events", headers=headers) as first,
        client.stream("GET", "/events", headers=headers) as second,
    ):
        assert (first.status_code, second.status_code) == (200, 200)
        third = await client.get("/events", headers=headers)
        assert third.status_code == 503
        assert third.headers["retry-after"] == "1"
        assert third.json()["type"] == "urn:fintrack:problem:too-many-clients"
    # Closed streams free their slots.
    async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:

        async def slot_free() -> bool:
            async with client.stream("GET", "/events", headers=headers) as again:
                return again.status_code == 200

        async with asyncio.timeout(10):
            while not await slot_free():
                await asyncio.sleep(0.05)


async def test_health_ready_and_metrics(notifier: RoleProcess, settings: Settings) -> None:
    """/health and /ready answer 200 with Redis and PostgreSQL up; /metrics has feed gauges."""
    async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"redis": "ok", "postgres": "ok", "feed": "ok"}
        async with client.stream("GET", "/events", headers=admin_headers(ADMIN_TOKEN)) as feed:
            await anext(feed.aiter_bytes())
            # Polled: once (under a full test run's load) a scrape missed the open feed;
            # the line it did show is kept for the message.
            gauge = ""
            async with asyncio.timeout(10):
                while gauge != "fintrack_notifier_sse_clients 1.0":
                    metrics = (await client.get("/metrics")).text
                    gauge = next(
                        (line for line in metrics.splitlines()
                         if line.startswith("fintrack_notifier_sse_clients ")),
                        "(no fintrack_notifier_sse_clients line)",
                    )  # fmt: skip
                    if gauge != "fintrack_notifier_sse_clients 1.0":
                        print("scraped:", gauge)
                        await asyncio.sleep(0.05)
        assert "fintrack_notifier_events_sent_total 0.0" in metrics
        assert "fintrack_notifier_clients_dropped_total" in metrics
        assert 'path="/events"' not in metrics  # feeds stay out of the latency histograms


async def test_events_sent_counts_each_event_written_to_each_feed(
    notifier: RoleProcess, settings: Settings, redis_client: Redis
) -> None:
    """Two feeds, three events: the counter says six."""
    async with (
        open_feed(notifier.base_url, ADMIN_TOKEN) as one,
        open_feed(notifier.base_url, ADMIN_TOKEN) as two,
    ):
        await publish(settings, redis_client, decision_events(3))
        await one.read_events(3)
        await two.read_events(3)
    async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:
        metrics = (await client.get("/metrics")).text
    assert "fintrack_notifier_events_sent_total 6.0" in metrics


async def test_open_mode_needs_no_credential(
    start_role: Callable[..., RoleProcess], settings: Settings
) -> None:
    """With FINTRACK_INSECURE_OPEN the feed and the dashboard need no credential."""
    notifier = start_role("notifier", settings, **FAST, FINTRACK_INSECURE_OPEN="true")
    async with httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client:
        assert (await client.get("/")).status_code == 200
        async with client.stream("GET", "/events") as feed:
            assert feed.status_code == 200


async def test_sigterm_ends_open_streams_and_exits(
    start_role: Callable[..., RoleProcess], settings: Settings
) -> None:
    """SIGTERM closes open feeds cleanly and the process exits well before their lifetime."""
    notifier = start_role("notifier", settings, **FAST, FINTRACK_SSE_LIFETIME_S="60")
    async with (
        httpx.AsyncClient(base_url=notifier.base_url, timeout=10) as client,
        client.stream("GET", "/events", headers=admin_headers(ADMIN_TOKEN)) as feed,
    ):
        chunks = feed.aiter_bytes()
        await anext(chunks)
        started = time.monotonic()
        notifier.proc.terminate()
        async with asyncio.timeout(20):
            async for _ in chunks:
                pass
        assert await asyncio.to_thread(notifier.proc.wait, 20) == 0
    assert time.monotonic() - started < 15
