"""``POST /transactions`` below Litestar: the api's hottest route, answered directly.

Litestar's request machinery (routing, the Request, dependencies, the Response) costs
several times a submission's own work. This ASGI wrapper answers the ordinary submission
itself, with the same parts the handler uses: the key ring, ``decode_transaction`` and
``validate_request``, the coalesced hand-off, the same answers and metrics. Whatever is
not ordinary goes to Litestar untouched, the body replayed: ``Prefer`` (waiting for the
decision), a CORS request, a body over the limit, a refused key, an invalid transaction.
Every refusal found before the hand-off is therefore answered (and audited, counted,
logged) in one place, by the handler; only the hand-off's own refusals (409, 429, 503)
are answered here, from the same problem documents.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

import msgspec
import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from fintrack.core.auth import bearer_secret
from fintrack.core.errors import ConflictError, UnavailableError
from fintrack.core.models import validate_request
from fintrack.ingest.auth import ANONYMOUS
from fintrack.ingest.body import decode_transaction
from fintrack.ingest.problems import PROBLEM_MEDIA_TYPE, problem_for
from fintrack.ingest.ratelimit import RateLimited
from fintrack.ingest.state import Resources
from fintrack.ingest.submission import counting_rejections, hand_off, location, now_ms
from fintrack.ingest.views import Accepted

log = structlog.get_logger(__name__)

PATH_TEMPLATE: Final = "/transactions"  # what Litestar names the route (for the metrics)
_PATHS: Final = frozenset({"/transactions", "/transactions/"})
_JSON: Final = b"application/json"
_PROBLEM: Final = PROBLEM_MEDIA_TYPE.encode()
_encoder = msgspec.json.Encoder()


class _Request:
    """What the fast path reads from a request's headers, in one pass."""

    __slots__ = ("api_key", "authorization", "content_length", "ordinary")

    def __init__(self, scope: Scope, cors: bool) -> None:
        self.authorization: str | None = None
        self.api_key: str | None = None
        self.content_length = 0
        self.ordinary = True
        for name, value in scope["headers"]:
            if name == b"authorization":
                self.authorization = value.decode("latin-1")
            elif name == b"x-api-key":
                self.api_key = value.decode("latin-1")
            elif name == b"content-length":
                self.content_length = int(value) if value.isdigit() else -1
            elif name == b"prefer" or (cors and name == b"origin"):
                self.ordinary = False


async def _read_body(receive: Receive, limit: int) -> tuple[list[ReceiveMessage], bytes | None]:
    """The messages read and the whole body, or None for the body if it is over ``limit``
    or the client went away (the messages are then replayed to Litestar)."""
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return messages, None
        if not message.get("more_body", False):
            return messages, chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replaying(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """``receive`` that first hands out ``messages`` again."""
    pending = deque(messages)

    async def replay() -> ReceiveMessage:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def fast_submissions(app: ASGIApp, resources: Callable[[], Resources]) -> ASGIApp:
    """``app`` with ordinary ``POST /transactions`` answered without it; ``resources``
    gives the lifespan's resources (read per request: they exist once it has started)."""

    async def submit(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != ScopeType.HTTP
            or scope["method"] != "POST"
            or scope["path"] not in _PATHS
        ):
            await app(scope, receive, send)
            return
        res = resources()
        settings = res.settings
        request = _Request(scope, bool(settings.cors_origin_list))
        if not request.ordinary or not 0 <= request.content_length <= settings.max_body_bytes:
            await app(scope, receive, send)
            return
        messages, body = await _read_body(receive, settings.max_body_bytes)
        client: str | None = ANONYMOUS
        if body is not None and settings.auth_enabled:
            client = await res.keyring.identify(
                bearer_secret(request.authorization, request.api_key)
            )
        txn = None
        if body is not None and client is not None:
            try:
                txn = validate_request(
                    decode_transaction(body, res.limits),
                    client_id=client,
                    received_at_ms=now_ms(),
                    defaults=res.defaults,
                )
            except Exception:  # noqa: BLE001 - the handler answers it (and counts it)
                txn = None
        if txn is None:
            await app(scope, _replaying(messages, receive), send)
            return

        scope["path_template"] = PATH_TEMPLATE
        txn_id = str(txn.txn_id)
        structlog.contextvars.bind_contextvars(txn_id=txn_id)
        try:
            with counting_rejections():
                await hand_off(res, txn)
        except (ConflictError, RateLimited, UnavailableError) as e:
            problem, extra = problem_for(e)
            if problem.status == 503:
                log.warning("dependency unavailable", error=repr(e), cause=repr(e.__cause__))
            headers = [(b"content-type", _PROBLEM)]
            headers += [(k.lower().encode(), v.encode()) for k, v in extra.items()]
            await _answer(send, problem.status, _encoder.encode(problem), headers)
            return
        await _answer(
            send,
            202,
            _encoder.encode(Accepted(txn_id)),
            [(b"content-type", _JSON), (b"location", location(txn_id).encode())],
        )

    return submit
