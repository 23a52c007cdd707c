"""Session cookies of the dashboard: signed, expiring, bound to the configured admin tokens
and the session secret; the last tests run real notifier processes."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import replace

import httpx

from conftest import ADMIN_TOKEN, RoleProcess
from fintrack.config import Settings, hash_secret
from fintrack.notify.session import (
    COOKIE,
    SESSION_TTL_S,
    authenticate,
    issue_session,
    session_key,
    verify_session,
)

StartRole = Callable[..., RoleProcess]
DIGESTS = {hash_secret("token-a"): "alice", hash_secret("token-b"): "bob.smith"}
NOW = 1_800_000_000.0
SECRET = "session-secret-" + secrets.token_hex(16)
OTHER_SECRET = "other-session-secret-" + secrets.token_hex(16)
WARNING = "no session secret"


def test_session_round_trip_and_expiry() -> None:
    """A cookie names its admin until it expires 12 hours after issue."""
    key = session_key(DIGESTS)
    value = issue_session(key, "bob.smith", NOW)
    assert verify_session(key, value, NOW + SESSION_TTL_S - 1) == ("bob.smith", None)
    assert verify_session(key, value, NOW + SESSION_TTL_S) == (None, "expired")


def test_tampered_or_foreign_cookies_are_refused() -> None:
    """Changing any part of the cookie, or signing with other tokens, invalidates it."""
    key = session_key(DIGESTS)
    value = issue_session(key, "alice", NOW)
    name, expiry, signature = value.split(".")
    assert verify_session(key, f"bob.{expiry}.{signature}", NOW) == (None, "invalid")
    assert verify_session(key, f"{name}.{int(expiry) + 1}.{signature}", NOW) == (None, "invalid")
    assert verify_session(key, "garbage", NOW) == (None, "invalid")
    rotated = session_key({hash_secret("token-c"): "alice"})
    assert verify_session(rotated, value, NOW) == (None, "invalid")
    # Same tokens, same key: every notifier process (and restart) accepts the cookie.
    assert session_key(dict(reversed(DIGESTS.items()))) == key


def test_bearer_token_wins_and_a_wrong_one_is_refused() -> None:
    """A presented bearer token decides, even when a valid cookie comes along."""
    key = session_key(DIGESTS)
    cookie = issue_session(key, "alice", NOW)

    def check(authorization: str | None, cookie: str | None) -> tuple[str | None, str | None]:
        verdict = authenticate(
            authorization=authorization,
            cookie=cookie,
            admin_digests=DIGESTS,
            key=key,
            now=NOW,
            open_access=False,
        )
        return verdict.admin, verdict.failure

    assert check("Bearer token-b", None) == ("bob.smith", None)
    assert check("Bearer nope", cookie) == (None, "invalid")
    assert check(None, cookie) == ("alice", None)
    assert check(None, None) == (None, "missing")


def test_session_secret_is_part_of_the_key() -> None:
    """With a secret, the key depends on it and on the digests; the digests alone (the key
    without a secret) no longer sign a valid cookie."""
    key = session_key(DIGESTS, SECRET)
    value = issue_session(key, "alice", NOW)
    assert verify_session(key, value, NOW) == ("alice", None)
    assert session_key(dict(reversed(DIGESTS.items())), SECRET) == key
    for other in (
        session_key(DIGESTS),  # the digests alone: what anyone reading the config can compute
        session_key(DIGESTS, OTHER_SECRET),
        session_key({hash_secret("token-c"): "alice"}, SECRET),  # a rotated admin token
    ):
        assert other != key
        assert verify_session(other, value, NOW) == (None, "invalid")
        assert verify_session(key, issue_session(other, "alice", NOW), NOW) == (None, "invalid")


# ---------------------------------------------------------------- real notifier processes


def _sign_in(notifier: RoleProcess) -> str:
    response = httpx.post(f"{notifier.base_url}/login", data={"token": ADMIN_TOKEN}, timeout=10)
    assert response.status_code == 303
    return response.cookies[COOKIE]


def _feed_status(notifier: RoleProcess, cookie: str) -> int:
    with (
        httpx.Client(base_url=notifier.base_url, timeout=10) as client,
        client.stream("GET", "/events", headers={"Cookie": f"{COOKIE}={cookie}"}) as response,
    ):
        return response.status_code


def test_a_cookie_signed_under_another_session_secret_is_refused(
    start_role: StartRole, settings: Settings
) -> None:
    """Two notifiers with the same admin tokens but different session secrets: each refuses
    the other's cookie (401) and accepts its own; neither logs its secret or the warning."""
    first = start_role("notifier", replace(settings, session_secret=SECRET))
    second = start_role("notifier", replace(settings, session_secret=OTHER_SECRET))
    first_cookie, second_cookie = _sign_in(first), _sign_in(second)
    assert first_cookie != second_cookie
    assert _feed_status(first, first_cookie) == 200
    assert _feed_status(second, second_cookie) == 200
    assert _feed_status(second, first_cookie) == 401
    assert _feed_status(first, second_cookie) == 401

    for notifier in (first, second):
        assert notifier.stop() == 0
        log = notifier.log()
        assert "admin credential refused" in log  # the foreign cookie, logged without it
        assert SECRET not in log
        assert OTHER_SECRET not in log
        assert WARNING not in log


def test_a_cookie_forged_from_the_digests_alone_is_refused_when_a_secret_is_set(
    start_role: StartRole, settings: Settings
) -> None:
    """The old derivation (admin digests only) forges a cookie a notifier without a session
    secret accepts, as before, warning about it once at start-up; with a secret the same
    cookie is refused. Running open, the notifier does not warn."""
    forged = issue_session(session_key(settings.admin_token_hashes), "alice", time.time())
    legacy = start_role("notifier", settings)
    secured = start_role("notifier", replace(settings, session_secret=SECRET))
    open_access = start_role("notifier", replace(settings, insecure_open=True))
    assert _feed_status(legacy, forged) == 200
    assert _feed_status(secured, forged) == 401
    assert _feed_status(secured, _sign_in(secured)) == 200

    for notifier in (legacy, secured, open_access):
        assert notifier.stop() == 0
    assert legacy.log().count(WARNING) == 1
    assert "FINTRACK_SESSION_SECRET" in legacy.log()
    assert WARNING not in secured.log()
    assert WARNING not in open_access.log()
    assert SECRET not in secured.log()
