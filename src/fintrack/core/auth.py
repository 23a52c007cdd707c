"""Credential checks shared by the api (API keys, admin tokens) and the notifier."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def bearer_secret(authorization: str | None, api_key_header: str | None = None) -> str | None:
    """The secret a request presents: ``Authorization: Bearer X`` or ``X-API-Key: X``."""
    if api_key_header:
        return api_key_header.strip() or None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def identify(secret: str | None, digests: Mapping[str, str]) -> str | None:
    """The name whose stored digest matches ``secret``, or None.

    Every stored digest is compared, with ``hmac.compare_digest``, whatever matches first,
    so timing reveals neither which entry matched nor how much of it.
    """
    if not secret or len(secret) > 512:
        return None
    presented = "sha256:" + hashlib.sha256(secret.encode()).hexdigest()
    found: str | None = None
    for digest, name in digests.items():
        if hmac.compare_digest(presented.encode(), digest.encode()):
            found = name
    return found
