"""The notifier's OpenAPI document, written out rather than inferred.

Its handlers answer with streams, files and redirects and read the feed's filters from the
raw query, so nothing Litestar could infer would be accurate. Patterns state exactly what
the handlers accept (filters are trimmed and case-insensitive, lists may be comma-separated
or repeated); ``tests/security/test_fuzz_notifier.py`` holds the two to each other.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import version
from typing import Any, Final

import msgspec
from litestar import get

from fintrack.core.events import SEVERITY_ORDER
from fintrack.core.models import FINAL_STATUSES

PATH: Final = "/schema/openapi.json"
MEDIA_TYPE: Final = "application/vnd.oai.openapi+json"
_KINDS: Final = ("decision", "alert")


# What str.strip() removes (the characters of str.isspace()), spelled out: regex engines
# disagree on what \s covers at the edges (\x1c-\x1f, \x85).
_SPACE: Final = "\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_WS: Final = f"[{_SPACE}]"
_NOT_WS: Final = f"[^{_SPACE}]"


# The only non-ASCII characters whose str.upper() (or .lower()) is an ASCII letter.
_UPPER_FOLDS: Final = {"i": "ı", "s": "ſ"}
_LOWER_FOLDS: Final = {"k": "\u212a"}


def _any_case(word: str, upper: bool) -> str:
    """``word`` in any case, as the handlers compare it (``.upper()`` or ``.lower()``)."""
    folds = _UPPER_FOLDS if upper else _LOWER_FOLDS
    return "".join(
        f"[{c.upper()}{c.lower()}{folds.get(c.lower(), '')}]" if c.isalpha() else c for c in word
    )


def _one_of_words(words: tuple[str, ...], upper: bool) -> str:
    return "(?:" + "|".join(_any_case(w, upper) for w in words) + ")"


def _word_list(words: tuple[str, ...], upper: bool) -> str:
    """Comma-separated words in any case, blanks around them and empty items allowed."""
    word = _one_of_words(words, upper)
    return f"^{_WS}*{word}?{_WS}*(?:,{_WS}*{word}?{_WS}*)*$"


# A text filter is trimmed, then must be 1 to 128 characters.
_TEXT_FILTER: Final = f"^{_WS}*{_NOT_WS}(?:[\\s\\S]{{0,126}}{_NOT_WS})?{_WS}*$"
_EVENT_ID: Final = f"^{_WS}*(?:[0-9]{{1,19}}-[0-9]{{1,19}})?{_WS}*$"
_EVENT_ID_NOTE: Final = (
    " `<ms>-<seq>`, as sent in `id:` lines; blank means from now. Each part is at most "
    "2^64-1; ids with more than 19 digits per part are not needed for any real stream."
)

_PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}
_PROBLEM_JSON: Final = "application/problem+json"


def _problem(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {_PROBLEM_JSON: {"schema": _PROBLEM_REF}},
    }
    if headers:
        answer["headers"] = headers
    return answer


_RETRY_AFTER: Final = {"schema": {"type": "string", "pattern": "^[0-9]+$"}, "required": True}
_LOCATION: Final = {"schema": {"type": "string"}, "required": True}
_CHALLENGE: Final = {"schema": {"type": "string"}, "required": True}
_HTML: Final = {"text/html": {"schema": {"type": "string"}}}


def _redirect(description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"location": _LOCATION}}


def _query(name: str, schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description, **extra}  # fmt: skip


def _list_filter(name: str, words: tuple[str, ...], upper: bool) -> dict[str, Any]:
    return _query(
        name,
        {"type": "array", "items": {"type": "string", "pattern": _word_list(words, upper)}},
        f"Any of {', '.join(words)} (any case); repeat it or separate values by commas.",
        style="form",
        explode=True,
    )


def _events() -> dict[str, Any]:
    return {
        "summary": "Live security feed (Server-Sent Events)",
        "description": "Events after `Last-Event-ID` (header, or the `last_event_id` query "
        "parameter for clients that can't set headers): history first, then live. "
        "`id:` is the event id, `event:` is `decision` or `alert`, `data:` is JSON. "
        "Comment lines are heartbeats. The stream ends after FINTRACK_SSE_LIFETIME_S; "
        "reconnect with the last id.",
        "tags": ["feed"],
        "security": [{"bearer": []}, {"session": []}],
        "parameters": [
            _list_filter("status", FINAL_STATUSES, upper=True),
            _list_filter("kind", _KINDS, upper=False),
            _query(
                "severity",
                {
                    "type": "string",
                    "pattern": f"^{_WS}*{_one_of_words(SEVERITY_ORDER, upper=False)}{_WS}*$",
                },
                f"Minimum severity: one of {', '.join(SEVERITY_ORDER)} (any case).",
            ),
            _query("user_id", {"type": "string", "pattern": _TEXT_FILTER}, "Only this user."),
            _query("rule", {"type": "string", "pattern": _TEXT_FILTER}, "Only if it fired."),
            _query(
                "last_event_id",
                {"type": "string", "pattern": _EVENT_ID},
                "Resume after this id." + _EVENT_ID_NOTE,
            ),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "pattern": _EVENT_ID},
                "description": "Resume after this id (sent by EventSource when it "
                "reconnects); wins over the query parameter." + _EVENT_ID_NOTE,
            },
        ],
        "responses": {
            "200": {
                "description": "The event stream.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "400": _problem("A filter or the event id is invalid; `param` names it."),
            "401": _problem("No valid admin token or session.", **{"www-authenticate": _CHALLENGE}),
            "503": _problem(
                "Too many feed clients, or the event stream can't be read; retry later.",
                **{"retry-after": _RETRY_AFTER},
            ),
        },
    }


def _form_body() -> dict[str, Any]:
    return {
        "required": False,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {"type": "object", "properties": {"token": {"type": "string"}}}
            }
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the notifier, as served at ``PATH``."""
    cross_origin = _problem("A cross-site form post (foreign Origin).")
    return {
        "openapi": "3.1.0",
        "info": {"title": "FinTrack-Sentinel notifier", "version": version("fintrack-sentinel")},
        "paths": {
            "/events": {"get": _events()},
            "/": {
                "get": {
                    "summary": "The dashboard",
                    "tags": ["dashboard"],
                    "security": [{"session": []}, {"bearer": []}, {}],
                    "responses": {
                        "200": {"description": "The dashboard page.", "content": _HTML},
                        "303": _redirect("Not signed in: to /login."),
                    },
                }
            },
            "/login": {
                "get": {
                    "summary": "The sign-in page",
                    "tags": ["dashboard"],
                    "responses": {
                        "200": {"description": "The sign-in form.", "content": _HTML},
                        "303": _redirect("Already signed in: to /."),
                    },
                },
                "post": {
                    "summary": "Sign in with an admin token",
                    "description": "A valid token (form field `token`) sets a 12-hour session "
                    "cookie and redirects to /; anything else redirects to /login?error=1.",
                    "tags": ["dashboard"],
                    "requestBody": _form_body(),
                    "responses": {
                        "303": _redirect("To / when signed in, else to /login?error=1."),
                        "403": cross_origin,
                        "413": _problem("The form is larger than 4 KiB."),
                    },
                },
            },
            "/logout": {
                "post": {
                    "summary": "Sign out",
                    "tags": ["dashboard"],
                    "responses": {
                        "303": _redirect("To /login, with the session cookie cleared."),
                        "403": cross_origin,
                    },
                }
            },
            "/static/{file_path}": {
                "get": {
                    "summary": "Dashboard assets",
                    "tags": ["dashboard"],
                    "parameters": [
                        {
                            "name": "file_path",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The file.",
                            "content": {
                                media: {"schema": {"type": "string"}}
                                for media in (
                                    "text/css; charset=utf-8",
                                    "text/javascript; charset=utf-8",
                                    "text/html; charset=utf-8",
                                    "image/svg+xml",
                                )
                            },
                        },
                        "404": _problem("No such file."),
                    },
                }
            },
            "/health": {
                "get": {
                    "summary": "Liveness",
                    "tags": ["operations"],
                    "responses": {
                        "200": {
                            "description": "The process answers.",
                            "content": {"application/json": {"schema": _HEALTH}},
                        }
                    },
                }
            },
            "/ready": {
                "get": {
                    "summary": "Readiness",
                    "tags": ["operations"],
                    "responses": {
                        code: {
                            "description": description,
                            "content": {"application/json": {"schema": _READY}},
                        }
                        for code, description in (
                            ("200", "Redis, PostgreSQL and the feed reader are up."),
                            ("503", "Something is not; `checks` says what."),
                        )
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "tags": ["operations"],
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": {"Problem": _PROBLEM},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An admin token."},
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "fintrack_session",
                    "description": "Set by POST /login.",
                },
            },
        },
    }


_PROBLEM: Final = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "param": {
            "type": ["string", "null"],
            "description": "The query parameter or header at fault.",
        },
    },
}
_HEALTH: Final = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"const": "ok"}},
}
_CHECK: Final = {"type": "string", "enum": ["ok", "unavailable", "starting"]}
_READY: Final = {
    "type": "object",
    "required": ["status", "checks", "clients"],
    "properties": {
        "status": {"enum": ["ready", "not ready"]},
        "checks": {
            "type": "object",
            "required": ["redis", "postgres", "feed"],
            "properties": {"redis": _CHECK, "postgres": _CHECK, "feed": _CHECK},
        },
        "clients": {"type": "integer", "minimum": 0},
    },
}


@cache
def _encoded() -> bytes:
    return msgspec.json.encode(document())


@get(PATH, media_type=MEDIA_TYPE, include_in_schema=False, sync_to_thread=False)
def openapi_document() -> bytes:
    """The OpenAPI document of this notifier."""
    return _encoded()
