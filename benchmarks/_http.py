"""A minimal HTTP/1.1 client for load generation: keep-alive POSTs and SSE readers.

httpx costs far more CPU per request than a benchmark can afford on the same two cores
as the servers; these speak just enough HTTP for our own endpoints (Content-Length or
chunked responses, no redirects, no TLS).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

CONNECT_TIMEOUT_S = 10.0
EVENT_MARK = b"\nevent: "  # once per SSE event frame (frames start with "id: ...\n")


def post_request(port: int, path: str, body: bytes, headers: str = "") -> bytes:
    """The bytes of one keep-alive ``POST path`` with a JSON body."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    ).encode() + body


def get_request(port: int, path: str, headers: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n".encode()


class HttpConnection:
    """One keep-alive connection; one request at a time."""

    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        return cls(reader, writer)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send ``raw``; return (status, body)."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            body = await self.reader.readexactly(int(lower[at + 17 : end]))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            body = await self._chunked()
        else:
            body = b""
        return status, body

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()


class SseClient(asyncio.Protocol):
    """Reads one SSE response and counts its event frames; optionally reports each one.

    Counting looks for ``EVENT_MARK`` in the raw bytes (chunk framing never splits a
    frame: the feed writes whole frames). ``on_frame(event_id, kind, data, received_ns)``
    is called per frame when given, for the few clients whose latency is measured.
    """

    def __init__(
        self,
        request: bytes,
        on_frame: Callable[[bytes, bytes, bytes, int], None] | None = None,
    ) -> None:
        self.request = request
        self.on_frame = on_frame
        self.status = 0
        self.events = 0
        self.bytes = 0
        self.connected = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self._head = b""
        self._carry = b""
        self._frames = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.status:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self._head[9:12])
            data = self._head[end + 4 :]
            self._head = b""
            if not self.connected.done():
                self.connected.set_result(self.status)
        self.bytes += len(data)
        window = self._carry + data
        self.events += window.count(EVENT_MARK)
        self._carry = window[-(len(EVENT_MARK) - 1) :]
        if self.on_frame is not None:
            self._parse(data, time.time_ns())

    def _parse(self, data: bytes, now_ns: int) -> None:
        parts = (self._frames + data).split(b"\n\n")
        self._frames = parts.pop()
        for part in parts:
            at = part.find(b"id: ")
            if at < 0:
                continue
            lines = part[at:].split(b"\n")
            if len(lines) < 3 or not lines[1].startswith(b"event: "):
                continue
            assert self.on_frame is not None
            self.on_frame(lines[0][4:], lines[1][7:], lines[2][6:], now_ns)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connected.done():
            self.connected.set_exception(exc or ConnectionError("closed before the headers"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_sse(
    port: int,
    path: str = "/events",
    on_frame: Callable[[bytes, bytes, bytes, int], None] | None = None,
    headers: str = "",
) -> SseClient:
    """Connect, send the request, wait for a 200; the client keeps reading in the loop."""
    loop = asyncio.get_running_loop()
    request = get_request(port, path, "Accept: text/event-stream\r\n" + headers)
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        _, client = await loop.create_connection(
            lambda: SseClient(request, on_frame), "127.0.0.1", port
        )
        try:
            status = await client.connected
        except BaseException:
            client.close()
            raise
    if status != 200:
        client.close()
        raise ConnectionError(f"GET {path} answered {status}")
    return client
