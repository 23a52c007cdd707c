"""Session cookies of the dashboard: signed, expiring, bound to the configured admin tokens."""

from __future__ import annotations

from fintrack.config import hash_secret
from fintrack.notify.session import (
    SESSION_TTL_S,
    authenticate,
    issue_session,
    session_key,
    verify_session,
)

DIGESTS = {hash_secret("token-a"): "alice", hash_secret("token-b"): "bob.smith"}
NOW = 1_800_000_000.0


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
