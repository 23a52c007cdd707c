"""RFC 9457 problem details for every error the notifier answers, built in one place."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_TYPE: Final = "urn:fintrack:problem:"


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An ``application/problem+json`` body."""

    type: str
    title: str
    status: int
    detail: str
    param: str | None = None  # the query parameter or header at fault, if one is


class ProblemError(HTTPException):
    """An error answered as a problem with our own ``type`` slug (and optional ``param``)."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail=detail, status_code=status, headers=headers)
        self.slug = slug
        self.param = param


def unauthorized(detail: str) -> ProblemError:
    # Not a stream: a browser's EventSource gives up on a non-200 answer, as it should.
    return ProblemError(
        401, "unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="fintrack"'}
    )


def _response(problem: Problem, headers: dict[str, str] | None) -> Response[Problem]:
    return Response(
        problem,
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={**(headers or {}), "Cache-Control": "no-store"},
    )


def http_problem(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    """Any ``HTTPException`` (ours, or Litestar's 404/405/...) → problem+json."""
    status = exc.status_code
    phrase = HTTPStatus(status).phrase
    if isinstance(exc, ProblemError):
        problem = Problem(
            type=_TYPE + exc.slug, title=phrase, status=status, detail=exc.detail, param=exc.param
        )
    else:
        problem = Problem(
            type=_TYPE + phrase.lower().replace(" ", "-"),
            title=phrase,
            status=status,
            detail=exc.detail if exc.detail and exc.detail != phrase else phrase,
        )
    return _response(problem, exc.headers)


def internal_problem(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
    """An unexpected error: logged with its traceback, answered without details."""
    log.exception("unhandled error", path=request.url.path)
    problem = Problem(
        type=_TYPE + "internal-error",
        title="Internal Server Error",
        status=500,
        detail="the server failed to answer; the error has been logged",
    )
    return _response(problem, None)
