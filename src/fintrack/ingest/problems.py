"""RFC 9457 problem details: every error the api answers, translated in this one place.

``problem_for`` maps an exception to a ``Problem`` (and extra headers); the batch endpoint
uses it for per-item errors, and ``exception_handlers`` turns it into responses.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any, Final

import msgspec
import psycopg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from fintrack.core.errors import ConflictError, FieldError, UnavailableError
from fintrack.ingest.ratelimit import RateLimited

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
RETRY_AFTER_S: Final = "1"
ROOT: Final = "$"  # the field name of "the body as a whole"

_TYPE = "urn:fintrack:problem:"
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_NAMED = re.compile(r"(?:unknown|missing required) field `(?P<name>[^`]+)`")


class FieldIssue(msgspec.Struct, frozen=True):
    """One offending input field, by JSON path relative to the body (``$`` is the body)."""

    field: str
    message: str


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """An ``application/problem+json`` body."""

    type: str
    title: str
    status: int
    detail: str
    errors: tuple[FieldIssue, ...] = ()


class MalformedBody(Exception):
    """The body is not JSON we can read at all (syntax, nesting depth, encoding)."""


_encoder = msgspec.json.Encoder()


def validation_issue(error: msgspec.ValidationError) -> FieldIssue:
    """msgspec's message → the field it is about and a message without the path suffix.

    msgspec says ``Expected `str`, got `int` - at `$.source_ip```; unknown and missing
    fields are named in backticks instead (``Object contains unknown field `foo```).
    """
    text = str(error)
    path = ""
    at = _AT.search(text)
    if at:
        path = at.group("path").removeprefix(".")
        text = text[: at.start()]
    named = _NAMED.search(text)
    if named:
        path = f"{path}.{named.group('name')}" if path else named.group("name")
    return FieldIssue(path or ROOT, text)


def problem_for(exc: Exception) -> tuple[Problem, dict[str, str]]:
    """The problem (and extra response headers) that answers ``exc``."""
    match exc:
        case FieldError():
            issue = FieldIssue(exc.field, exc.problem)
            return _invalid(f"{exc.field}: {exc.problem}", issue), {}
        case msgspec.ValidationError():
            issue = validation_issue(exc)
            return _invalid(f"{issue.field}: {issue.message}", issue), {}
        case msgspec.DecodeError() | MalformedBody():
            issue = FieldIssue(ROOT, str(exc))
            return Problem(
                type=_TYPE + "malformed-json",
                title="Malformed JSON",
                status=400,
                detail=f"the body is not valid JSON: {exc}",
                errors=(issue,),
            ), {}
        case RateLimited():
            return Problem(
                type=_TYPE + "rate-limited",
                title="Too Many Requests",
                status=429,
                detail=str(exc),
            ), {"Retry-After": exc.retry_after_s}
        case ConflictError():
            return Problem(
                type=_TYPE + "txn-id-conflict",
                title="txn_id already used",
                status=409,
                detail=str(exc),
                errors=(FieldIssue("txn_id", "already used"),),
            ), {}
        case psycopg.OperationalError() | RedisConnectionError() | RedisTimeoutError():
            return problem_for(UnavailableError("a dependency is unreachable"))
        case UnavailableError():
            return Problem(
                type=_TYPE + "unavailable",
                title="Service unavailable",
                status=503,
                detail=f"{exc}; retry later (a submission with the same txn_id is safe)",
            ), {"Retry-After": RETRY_AFTER_S}
        case HTTPException():
            return _http_problem(exc), dict(exc.headers or {})
    return Problem(
        type="about:blank",
        title=HTTPStatus.INTERNAL_SERVER_ERROR.phrase,
        status=500,
        detail="unexpected error; it has been logged",
    ), {}


def _invalid(detail: str, issue: FieldIssue) -> Problem:
    return Problem(
        type=_TYPE + "invalid-field",
        title="Invalid field",
        status=422,
        detail=detail,
        errors=(issue,),
    )


def _http_problem(exc: HTTPException) -> Problem:
    if isinstance(exc, ValidationException):
        return _litestar_validation(exc)
    status = HTTPStatus(exc.status_code)
    detail = exc.detail if exc.detail and exc.detail != status.phrase else status.description
    return Problem(type="about:blank", title=status.phrase, status=status.value, detail=detail)


def _litestar_validation(exc: ValidationException) -> Problem:
    """Litestar's own checks (query parameters, admin bodies) in our shapes: field errors are
    422 like ours, an unreadable body is 400. Its body errors name the field ``data``."""
    issues = []
    for item in exc.extra if isinstance(exc.extra, list) else ():
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", ""))
        field = str(item.get("key") or ROOT)
        named = _NAMED.search(message)
        if field == "data":
            field = named.group("name") if named else ROOT
        issues.append(FieldIssue(field, message))
    if not issues:
        return problem_for(MalformedBody(exc.detail))[0]
    return Problem(
        type=_TYPE + "invalid-field",
        title="Invalid field",
        status=422,
        detail="; ".join(f"{i.field}: {i.message}" for i in issues),
        errors=tuple(issues),
    )


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> Response[bytes]:
    """``problem`` as an ``application/problem+json`` response."""
    return Response(
        _encoder.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers or {},
    )


def problem_spec(description: str) -> ResponseSpec:
    """An OpenAPI error response carrying a problem document."""
    return ResponseSpec(
        Problem, description=description, media_type=PROBLEM_MEDIA_TYPE, generate_examples=False
    )


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """Litestar exception handler: every error leaves the api through here."""
    problem, headers = problem_for(exc)
    if problem.status >= 500:
        if problem.status == 503:
            log.warning("dependency unavailable", error=repr(exc), cause=repr(exc.__cause__))
        else:
            log.error("unhandled error", exc_info=exc)
    return problem_response(problem, headers)


exception_handlers: dict[type[Exception] | int, Any] = {
    Exception: handle_exception,
    HTTPException: handle_exception,
}
