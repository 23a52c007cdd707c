"""Helpers for the notifier tests: publish events exactly as workers do, and read SSE.

``publish`` XADDs each event to the events stream with ``stream_fields`` and, like the
workers, can archive it into ``security_events`` keyed by its entry id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
import psycopg
from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.core.events import (
    Decision,
    RuleHit,
    SecurityEvent,
    event_encoder,
    events_for,
    stream_fields,
)
from fintrack.core.models import Status, Transaction


def decision_events(
    n: int,
    *,
    status: Status = "APPROVED",
    user_id: str = "user_1",
    rules: Sequence[str] = (),
    pad: int = 0,
) -> list[SecurityEvent]:
    """The events of ``n`` decisions (two per non-APPROVED decision: decision + alert).

    ``pad`` lengthens each reason to make events bigger on the wire.
    """
    events: list[SecurityEvent] = []
    now = int(time.time() * 1000)
    hits = tuple(RuleHit(rule, 10, f"{rule} fired" + "." * pad) for rule in rules)
    for i in range(n):
        txn = Transaction(
            txn_id=uuid.uuid4(),
            user_id=user_id,
            amount=Decimal("150000.00") + i,
            currency="INR",
            merchant_type="luxury_goods",
            source_ip="192.168.1.50",
            client_id="acme",
            received_at_ms=now,
        )
        events.extend(
            events_for(
                Decision(
                    txn=txn,
                    status=status,
                    risk_score=10 * len(hits),
                    hits=hits,
                    decided_at_ms=now + 1,
                )
            )
        )
    return events


async def publish(
    settings: Settings,
    redis: Redis,
    events: Sequence[SecurityEvent],
    *,
    archive: bool = False,
) -> list[str]:
    """XADD ``events`` in order (pipelined); with ``archive`` also store them in
    PostgreSQL as the workers do. Returns the entry ids."""
    ids: list[str] = []
    for start in range(0, len(events), 500):
        async with redis.pipeline(transaction=False) as pipe:
            for event in events[start : start + 500]:
                pipe.xadd(settings.event_stream, stream_fields(event))  # type: ignore[arg-type]
            ids.extend(entry.decode() for entry in await pipe.execute())
    if archive:
        await archive_rows(settings, list(zip(ids, events, strict=True)))
    return ids


async def archive_rows(settings: Settings, rows: Sequence[tuple[str, SecurityEvent]]) -> None:
    """Insert (entry id, event) pairs into ``security_events`` with COPY."""
    async with await psycopg.AsyncConnection.connect(settings.database_url) as conn:
        async with (
            conn.cursor() as cur,
            cur.copy("COPY security_events (id_ms, id_seq, kind, txn_id, data) FROM STDIN") as copy,
        ):
            for entry_id, event in rows:
                ms, seq = entry_id.split("-")
                await copy.write_row(
                    (
                        int(ms),
                        int(seq),
                        event.kind,
                        event.txn_id,
                        event_encoder.encode(event).decode(),
                    )
                )
        await conn.commit()


def admin_headers(token: str, last_event_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    return headers


@dataclass
class SSEEvent:
    id: str
    event: str
    data: str


@dataclass
class SSEParser:
    """The EventSource parsing rules, enough for tests: fields, comments, retry, and
    ``id``-only blocks that move the last event id without dispatching an event."""

    last_event_id: str = ""
    retry: int | None = None
    comments: list[str] = field(default_factory=list)
    _buffer: bytes = b""
    _data: list[str] = field(default_factory=list)
    _event: str = ""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        dispatched: list[SSEEvent] = []
        *lines, self._buffer = self._buffer.split(b"\n")
        for raw in lines:
            line = raw.decode().removesuffix("\r")
            if not line:
                if self._data:
                    dispatched.append(
                        SSEEvent(
                            self.last_event_id, self._event or "message", "\n".join(self._data)
                        )
                    )
                self._data, self._event = [], ""
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                self.comments.append(value)
            elif name == "id":
                self.last_event_id = value
            elif name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)
            elif name == "retry" and value.isdigit():
                self.retry = int(value)
        return dispatched


async def sse_events(response: httpx.Response, parser: SSEParser) -> AsyncIterator[SSEEvent]:
    """The events of a streaming response, as they arrive."""
    async for chunk in response.aiter_bytes():
        for event in parser.feed(chunk):
            yield event


class SSEClient:
    """An open feed response read incrementally: events so far, pings, last event id."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = SSEParser()
        self.events: list[SSEEvent] = []
        self.ended = False
        self._chunks = response.aiter_bytes()

    @property
    def pings(self) -> int:
        return self.parser.comments.count("ping")

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events]

    async def read_until(self, done: Callable[[SSEClient], bool], timeout: float) -> None:
        """Read until ``done(self)`` or the stream ends; fail after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not done(self) and not self.ended:
                try:
                    chunk = await anext(self._chunks)
                except StopAsyncIteration:
                    self.ended = True
                    break
                self.events.extend(self.parser.feed(chunk))

    async def read_events(self, n: int, timeout: float = 20) -> list[SSEEvent]:
        """Read until at least ``n`` events arrived in total; return them all."""
        await self.read_until(lambda c: len(c.events) >= n, timeout)
        assert len(self.events) >= n, f"stream ended after {len(self.events)} of {n} events"
        return self.events

    async def read_quiet(self, timeout: float = 10) -> None:
        """Read until the next heartbeat: whatever was due has arrived by then."""
        pings = self.pings
        await self.read_until(lambda c: c.pings > pings, timeout)


@asynccontextmanager
async def open_feed(
    base_url: str,
    token: str,
    *,
    last_event_id: str | None = None,
    params: dict[str, str | list[str]] | None = None,
    timeout: float = 30,
) -> AsyncIterator[SSEClient]:
    """An authenticated ``GET /events`` stream (200 asserted)."""
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=timeout) as client,
        client.stream(
            "GET", "/events", headers=admin_headers(token, last_event_id), params=params
        ) as response,
    ):
        assert response.status_code == 200, response.status_code
        yield SSEClient(response)
