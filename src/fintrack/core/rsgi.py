"""An ASGI app served through Granian's RSGI interface.

Granian's ASGI interface hands every ``receive()`` and ``send()`` across to its Rust side
and back, each a thread hand-over on an awaited future. RSGI reads a body in one call and
writes a whole response in one call that is not awaited. With an empty handler at 3,000
requests a second, ASGI cost 145-152 us of CPU per request and RSGI 107-111 us (the rest
is the wake-ups of an unsaturated server), so the api, whose ordinary request is one body
in and one body out, is served this way. The app stays an ordinary ASGI app (Litestar
below our own wrappers): this adapter builds the ASGI scope from RSGI's, answers
``receive()`` from the body, and turns the ``send()`` messages into one RSGI response,
or a stream when the app sends its body in parts. It also runs the app's ASGI lifespan.

A ``Shortcut`` may answer some requests before any of that: it is offered the requests it
claims whose whole body is within the limit, with that body, and answers or declines. A
declined request goes to the app as any other, its body replayed. The api answers its
ordinary submissions this way, without the ~70-100 us a request that the ASGI scope,
Litestar's entry and the api's ``send`` wrappers cost (docs/performance.md).

Differences from Granian's ASGI scope, none of which the api reads: ``raw_path`` is
rebuilt from the decoded path (RSGI has no raw path), and there is no ``extensions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Iterable
from typing import Any, Final, Protocol
from urllib.parse import quote

import structlog

# granian.rsgi re-exports these under shorter names without declaring them public.
from granian.rsgi import HTTPProtocol as RSGIHTTPProtocol  # type: ignore[attr-defined]
from granian.rsgi import ProtocolClosed as RSGIProtocolClosed  # type: ignore[attr-defined]
from granian.rsgi import Scope as RSGIScope

# ASGI messages and scopes are plain dicts here: Litestar's TypedDicts for them describe
# an app's view, and this is the server's side.
Message = dict[str, Any]

log = structlog.get_logger(__name__)

_ASGI: Final = {"version": "3.0", "spec_version": "2.3"}
_END: Final[Message] = {"type": "http.request", "body": b"", "more_body": False}
_DISCONNECT: Final[Message] = {"type": "http.disconnect"}


# A whole answer: status, headers, body.
Answer = tuple[int, list[tuple[str, str]], bytes]


class Headers(Protocol):
    """A request's headers as RSGI gives them (names in lower case)."""

    def get(self, key: str, default: str | None = None) -> str | None: ...
    def items(self) -> Iterable[tuple[str, str]]: ...


class Shortcut(Protocol):
    """Answers some requests without the ASGI app (see the module docstring)."""

    def claims(self, method: str, path: str) -> bool:
        """Whether requests to ``method path`` are offered to ``answer``."""
        ...

    async def answer(self, path: str, headers: Headers, body: bytes) -> Answer | None:
        """The answer to a request it claimed, or None to let the ASGI app answer it."""
        ...


class StartupFailedError(RuntimeError):
    """The app's lifespan startup failed: the worker must not serve."""


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port or 0)


class _Exchange:
    """One request's ``receive`` and ``send``, over one RSGI protocol object."""

    __slots__ = ("_answered", "_body_left", "_headers", "_protocol", "_status", "_stream", "done")

    def __init__(
        self, protocol: RSGIHTTPProtocol, whole_body: bool, body: bytes | None = None
    ) -> None:
        self._protocol = protocol
        # True: read the body in one call; None: in parts, not started; False: all read;
        # bytes: read already (by a shortcut that declined); else the async iterator over
        # its parts.
        self._body_left: Any = body if body is not None else True if whole_body else None
        self._status = 500
        self._headers: list[tuple[str, str]] = []
        self._stream: Any = None
        self._answered: asyncio.Event | None = None  # made only for a receive() after the body
        self.done = False

    async def receive(self) -> Message:
        left = self._body_left
        if left is True:  # the whole body (its Content-Length is within the app's limit)
            self._body_left = False
            return {"type": "http.request", "body": await self._protocol(), "more_body": False}
        if type(left) is bytes:
            self._body_left = False
            return {"type": "http.request", "body": left, "more_body": False}
        if left is None:  # no length, or over the limit: in parts, so the app can stop early
            self._body_left = left = aiter(self._protocol)
        if left is not False:
            try:
                chunk = await anext(left)
            except StopAsyncIteration:
                self._body_left = False
                return _END
            return {"type": "http.request", "body": chunk, "more_body": True}
        # After the body, an ASGI app learns of a client that left (and, as ASGI servers do,
        # of its own response being complete: Litestar's streaming waits for that).
        if not self.done:
            self._answered = answered = self._answered or asyncio.Event()
            gone = asyncio.ensure_future(self._protocol.client_disconnect())
            done = asyncio.ensure_future(answered.wait())
            try:
                await asyncio.wait((gone, done), return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                done.cancel()
        return _DISCONNECT

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._status = message["status"]
            self._headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
            return
        if kind != "http.response.body" or self.done:
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self._stream is None and not more:
            self._protocol.response_bytes(self._status, self._headers, body)
            self._finish()
            return
        if self._stream is None:
            self._stream = self._protocol.response_stream(self._status, self._headers)
        try:
            if body:
                await self._stream.send_bytes(body)
        except RSGIProtocolClosed as e:
            raise ConnectionResetError("the client closed the connection") from e
        if not more:
            self._finish()

    def _finish(self) -> None:
        self.done = True
        if self._answered is not None:
            self._answered.set()


class RSGIAdapter:
    """Serves ``app`` (ASGI 3) under Granian's RSGI interface, lifespan included.

    ``max_body_bytes``: a body whose Content-Length is at most this is read in one call;
    any other (no length, or longer) is handed to the app in parts, so that the app's own
    limit stops reading it."""

    def __init__(self, app: Any, *, max_body_bytes: int, shortcut: Shortcut | None = None) -> None:
        self._app = app
        self._max_body = max_body_bytes
        self._shortcut = shortcut
        self._state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._lifespan: asyncio.Task[None] | None = None

    async def __rsgi__(self, scope: RSGIScope, protocol: RSGIHTTPProtocol) -> None:
        if scope.proto != "http":  # websockets are off
            return
        length = -1
        for name, value in scope.headers.items():
            if name == "content-length":
                length = int(value) if value.isdigit() else -1
                break
        whole_body = 0 <= length <= self._max_body
        body = None
        shortcut = self._shortcut
        if whole_body and shortcut is not None and shortcut.claims(scope.method, scope.path):
            body = await protocol()
            answer = await shortcut.answer(scope.path, scope.headers, body)
            if answer is not None:
                protocol.response_bytes(*answer)
                return
        path = scope.path
        asgi_scope = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": scope.http_version,
            "server": _host_port(scope.server),
            "client": _host_port(scope.client),
            "scheme": scope.scheme,
            "method": scope.method,
            "root_path": "",
            "path": path,
            "raw_path": quote(path).encode(),
            "query_string": scope.query_string.encode("latin-1"),
            "headers": [
                (n.encode("latin-1"), v.encode("latin-1")) for n, v in scope.headers.items()
            ],
            "state": self._state.copy(),
        }
        # (An app that returns without answering gets Granian's own 500.)
        exchange = _Exchange(protocol, whole_body, body)
        await self._app(asgi_scope, exchange.receive, exchange.send)

    # ---- the lifespan: Granian calls these in each worker process, around serving ----

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(self._startup())
        except StartupFailedError as e:
            # As Granian does for an ASGI app: the worker exits instead of serving.
            log.error("lifespan startup failed", error=str(e))
            sys.exit(1)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self._shutdown())

    async def _startup(self) -> None:
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self._state}
        self._lifespan = asyncio.get_running_loop().create_task(self._run_lifespan(scope))
        await self._to_app.put({"type": "lifespan.startup"})
        answer = await self._from_app.get()
        if answer["type"] != "lifespan.startup.complete":
            raise StartupFailedError(answer.get("message") or "the app refused to start")

    async def _run_lifespan(self, scope: Message) -> None:
        try:
            await self._app(scope, self._to_app.get, self._from_app.put)
        except Exception as e:  # noqa: BLE001 -- an app that raises instead of saying "failed"
            await self._from_app.put({"type": "lifespan.startup.failed", "message": repr(e)})

    async def _shutdown(self) -> None:
        task = self._lifespan
        if task is None or task.done():
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._from_app.get()
        with contextlib.suppress(Exception):
            await task
