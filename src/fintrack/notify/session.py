"""Admin credentials of the notifier: a bearer token, or the session cookie a browser
gets from ``POST /login``.

The cookie is ``name.expiry.signature``, signed with a key derived from the session secret
(``FINTRACK_SESSION_SECRET``) and the configured admin token digests. The digests are safe
to show, so without the secret they alone do not let anyone forge a cookie. Every notifier
process derives the same key, sessions survive restarts, and rotating or removing an admin
token (or changing the secret) ends every session. Without a session secret the key comes
from the digests alone, as before the setting existed; the notifier warns about it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import quote, unquote

from fintrack.core.auth import bearer_secret, identify

COOKIE: Final = "fintrack_session"
SESSION_TTL_S: Final = 12 * 3600
_KEY_LABEL: Final = b"fintrack notifier session cookie v1"
_MAX_COOKIE: Final = 512

Failure = Literal["missing", "invalid", "expired"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Who the request is (``admin`` set), or why it is refused (``failure`` set)."""

    admin: str | None
    failure: Failure | None = None
    via: Literal["bearer", "cookie", "open", ""] = ""


def session_key(admin_digests: Mapping[str, str], secret: str = "") -> bytes:
    """The cookie signing key: an HMAC keyed with the session ``secret`` over the label and
    the sorted admin token digests. Without a secret (legacy): an HMAC keyed with the label
    over the digests, which anyone who can read the configuration can compute."""
    material = "\n".join(sorted(admin_digests)).encode()
    if not secret:
        return hmac.new(_KEY_LABEL, material, hashlib.sha256).digest()
    return hmac.new(secret.encode(), _KEY_LABEL + b"\0" + material, hashlib.sha256).digest()


def _signature(key: bytes, payload: str) -> str:
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def issue_session(key: bytes, admin: str, now: float) -> str:
    """A cookie value for ``admin`` that expires ``SESSION_TTL_S`` seconds from ``now``."""
    payload = f"{quote(admin, safe='')}.{int(now) + SESSION_TTL_S}"
    return f"{payload}.{_signature(key, payload)}"


def verify_session(key: bytes, value: str, now: float) -> tuple[str | None, Failure | None]:
    """(admin name, None) for a valid cookie value, else (None, why)."""
    if len(value) > _MAX_COOKIE:
        return None, "invalid"
    payload, _, signature = value.rpartition(".")
    name, _, expiry = payload.rpartition(".")
    if not name or not expiry.isdigit():
        return None, "invalid"
    if not hmac.compare_digest(signature.encode(), _signature(key, payload).encode()):
        return None, "invalid"
    if int(expiry) <= now:
        return None, "expired"
    return unquote(name), None


def authenticate(
    *,
    authorization: str | None,
    cookie: str | None,
    admin_digests: Mapping[str, str],
    key: bytes,
    now: float,
    open_access: bool,
) -> Verdict:
    """Check a request's admin credential: bearer token first, then the session cookie.

    A bearer token that is presented but wrong refuses the request even if a valid cookie
    came along: an explicit credential must not be silently ignored.
    """
    if open_access:
        return Verdict("anonymous", via="open")
    if authorization is not None:
        admin = identify(bearer_secret(authorization), admin_digests)
        return Verdict(admin, via="bearer") if admin else Verdict(None, "invalid")
    if cookie:
        admin, failure = verify_session(key, cookie, now)
        if admin is not None and admin in admin_digests.values():
            return Verdict(admin, via="cookie")
        return Verdict(None, failure or "invalid")
    return Verdict(None, "missing")
