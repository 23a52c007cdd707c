"""Feed filters (status, severity, user_id, rule, kind) on replayed history and live events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from decimal import Decimal

from notify_support import decision_events, open_feed, publish
from redis.asyncio import Redis

from conftest import ADMIN_TOKEN, RoleProcess
from fintrack.config import Settings
from fintrack.core.events import SEVERITY_ORDER, Decision, SecurityEvent, events_for
from fintrack.core.models import Transaction

Check = Callable[[SecurityEvent], bool]

FILTERS: list[tuple[dict[str, str | list[str]], Check]] = [
    ({"status": "BLOCKED,FLAGGED"}, lambda e: e.status in ("BLOCKED", "FLAGGED")),
    ({"status": ["blocked", "FAILED"]}, lambda e: e.status in ("BLOCKED", "FAILED")),
    ({"severity": "high"}, lambda e: SEVERITY_ORDER.index(e.severity) >= 3),
    ({"user_id": "u1"}, lambda e: e.user_id == "u1"),
    ({"rule": "velocity"}, lambda e: any(h.rule == "velocity" for h in e.reasons)),
    ({"kind": "alert"}, lambda e: e.kind == "alert"),
    (
        {"kind": "alert", "user_id": "u1", "severity": "medium"},
        lambda e: e.kind == "alert" and e.user_id == "u1" and e.severity in ("high", "medium"),
    ),
]


def _failed(user_id: str) -> list[SecurityEvent]:
    base = Transaction(
        txn_id=uuid.uuid4(),
        user_id=user_id,
        amount=Decimal("99.50"),
        currency="INR",
        merchant_type="general",
        source_ip="10.0.0.1",
        client_id="acme",
        received_at_ms=0,
    )
    decision = Decision(
        txn=base,
        status="FAILED",
        risk_score=0,
        hits=(),
        decided_at_ms=1,
        failure_reason="kept failing",
    )
    return events_for(decision)


def _mix() -> list[SecurityEvent]:
    """Every status, three users, two rules; the last event matches few filters."""
    return [
        *decision_events(3, user_id="u1"),
        *decision_events(2, status="FLAGGED", user_id="u2", rules=["velocity"]),
        *decision_events(2, status="BLOCKED", user_id="u1", rules=["ip_blocklist", "velocity"]),
        *_failed("u3"),
        *decision_events(1, user_id="u2"),
    ]


async def test_filters_apply_to_history_and_live_and_ids_still_advance(
    start_role: Callable[..., RoleProcess], settings: Settings, redis_client: Redis
) -> None:
    """Each filter passes exactly its events, from archive, Redis and live alike; the
    client's Last-Event-ID still reaches the newest event, filtered out or not."""
    notifier = start_role("notifier", settings, FINTRACK_SSE_HEARTBEAT_S="0.2")
    history = _mix() + _mix()
    history_ids = await publish(settings, redis_client, history, archive=True)
    # Half the history only in the archive, half still in Redis.
    await redis_client.xtrim(
        settings.event_stream, minid=history_ids[len(history) // 2], approximate=False
    )
    async with AsyncExitStack() as stack:
        feeds = [
            await stack.enter_async_context(
                open_feed(notifier.base_url, ADMIN_TOKEN, last_event_id="0-1", params=params)
            )
            for params, _ in FILTERS
        ]
        for feed, (_, check) in zip(feeds, FILTERS, strict=True):
            await feed.read_events(sum(map(check, history)))
        live = _mix()
        live_ids = await publish(settings, redis_client, live)
        for feed, (params, check) in zip(feeds, FILTERS, strict=True):
            await feed.read_events(sum(map(check, history + live)))
            await feed.read_quiet()
            expected = [
                i for i, e in zip(history_ids + live_ids, history + live, strict=True) if check(e)
            ]
            assert feed.ids == expected, params
            assert feed.parser.last_event_id == live_ids[-1], params
