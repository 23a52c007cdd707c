"""``POST /transactions`` before the ASGI app: the api's hottest route, answered directly.

Litestar's request machinery (routing, the Request, dependencies, the Response) and the
ASGI layers around it (the adapter's scope, the request log and the security headers,
each a wrapper of ``send``) cost several times a submission's own work. ``FastSubmissions``
is the api's shortcut under the RSGI adapter (``core.rsgi``): offered an ordinary
submission with its whole body, it answers it with the same parts the handler uses (the
key ring, ``decode_transaction`` and ``validate_request``, the coalesced hand-off, the same
answers, headers, metrics and log line). Whatever is not ordinary it declines, and the
adapter hands the request to Litestar: ``Prefer`` (waiting for the decision), a CORS
request, headers over the limit, a refused key, an invalid transaction; a body without a
Content-Length or over the limit is never offered. Every refusal found before the hand-off
is therefore answered (and audited, counted, logged) in one place, by the handler; only the
hand-off's own refusals (409, 429, 503) are answered here, from the same problem documents.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import msgspec
import structlog

from fintrack.config import Settings
from fintrack.core.auth import bearer_secret
from fintrack.core.errors import ConflictError, UnavailableError
from fintrack.core.httpedge import API_HEADERS, headers_size
from fintrack.core.models import Transaction, validate_request
from fintrack.core.rsgi import Answer, Headers
from fintrack.ingest.auth import ANONYMOUS
from fintrack.ingest.body import decode_transaction
from fintrack.ingest.problems import PROBLEM_MEDIA_TYPE, problem_for
from fintrack.ingest.ratelimit import RateLimited
from fintrack.ingest.requestlog import record_request, request_id_for
from fintrack.ingest.state import Resources
from fintrack.ingest.submission import counting_rejections, hand_off, location, now_ms
from fintrack.ingest.views import Accepted

log = structlog.get_logger(__name__)

PATH_TEMPLATE: Final = "/transactions"  # what Litestar names the route (for the metrics)
_PATHS: Final = frozenset({"/transactions", "/transactions/"})
# What guard_http adds to every answer of the api.
_SECURITY: Final = tuple(API_HEADERS.items())
_encoder = msgspec.json.Encoder()


class FastSubmissions:
    """The api's ``core.rsgi.Shortcut``: ordinary submissions, answered as the handler
    would. ``resources`` gives the lifespan's resources (read per request: they exist once
    it has started)."""

    __slots__ = ("_cors", "_max_header_bytes", "_resources")

    def __init__(self, settings: Settings, resources: Callable[[], Resources]) -> None:
        self._resources = resources
        self._cors = bool(settings.cors_origin_list)
        self._max_header_bytes = settings.max_header_bytes

    def claims(self, method: str, path: str) -> bool:
        return method == "POST" and path in _PATHS

    async def answer(self, path: str, headers: Headers, body: bytes) -> Answer | None:
        if (
            headers.get("prefer") is not None
            or (self._cors and headers.get("origin") is not None)
            or headers_size(headers.items()) > self._max_header_bytes
        ):
            return None
        started = time.perf_counter()
        res = self._resources()
        txn = await self._ordinary(res, headers, body)
        if txn is None:
            return None
        sent_id = headers.get("x-request-id")
        request_id = request_id_for(sent_id.encode("latin-1") if sent_id is not None else None)
        txn_id = str(txn.txn_id)
        structlog.contextvars.bind_contextvars(request_id=request_id, txn_id=txn_id)
        status = 500  # if the hand-off dies with anything else, Granian answers 500
        try:
            status, answer_headers, answer_body = await self._hand_off(res, txn, txn_id)
        finally:
            duration_s = time.perf_counter() - started
            record_request("POST", path, PATH_TEMPLATE, status, duration_s)
        answer_headers += _SECURITY
        answer_headers.append(("x-request-id", request_id))
        return status, answer_headers, answer_body

    @staticmethod
    async def _ordinary(res: Resources, headers: Headers, body: bytes) -> Transaction | None:
        """The transaction, if the key is known and the body valid; else None."""
        client = ANONYMOUS
        if res.settings.auth_enabled:
            secret = bearer_secret(headers.get("authorization"), headers.get("x-api-key"))
            known = await res.keyring.identify(secret)
            if known is None:
                return None
            client = known
        try:
            return validate_request(
                decode_transaction(body, res.limits),
                client_id=client,
                received_at_ms=now_ms(),
                defaults=res.defaults,
            )
        except Exception:  # noqa: BLE001 - the handler answers it (and counts it)
            return None

    @staticmethod
    async def _hand_off(res: Resources, txn: Transaction, txn_id: str) -> Answer:
        try:
            with counting_rejections():
                await hand_off(res, txn)
        except (ConflictError, RateLimited, UnavailableError) as e:
            problem, extra = problem_for(e)
            if problem.status == 503:
                log.warning("dependency unavailable", error=repr(e), cause=repr(e.__cause__))
            headers = [("content-type", PROBLEM_MEDIA_TYPE)]
            headers += [(name.lower(), value) for name, value in extra.items()]
            return problem.status, headers, _encoder.encode(problem)
        headers = [("content-type", "application/json"), ("location", location(txn_id))]
        return 202, headers, _encoder.encode(Accepted(txn_id))
