"""Settings: every knob comes from ``FINTRACK_*`` environment variables.

This is the only module that reads the environment, and only when ``Settings.from_env`` is
called, never at import time. A bad value fails loudly with the variable's name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints

PREFIX = "FINTRACK_"
TEXT_CEILING = 256  # the longest user_id / merchant_type any configuration may allow
SESSION_SECRET_MIN = 32  # characters; 32 random ones are well over 128 bits

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]


class SettingsError(ValueError):
    """A ``FINTRACK_*`` variable is missing or has a value we cannot use."""


def hash_secret(secret: str) -> str:
    """The stored form of an API key or admin token: ``sha256:<hex>``.

    Keys are long random tokens, so a fast hash is enough; what matters is that the
    plain secret never sits in configuration, logs or memory dumps of settings.
    """
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Settings:
    """Runtime configuration shared by every role. Field ``x`` is read from ``FINTRACK_X``."""

    # Connections. Empty means "not configured": `run all` then starts embedded servers.
    redis_url: str = ""
    database_url: str = ""
    key_prefix: str = "fintrack"  # every Redis key and stream starts with this

    # HTTP listeners.
    api_host: str = "127.0.0.1"
    api_port: int = 8001
    notifier_host: str = "127.0.0.1"
    notifier_port: int = 8002
    http_workers: int = 1

    # Ingest limits and defaults.
    max_body_bytes: int = 1_048_576
    max_batch_items: int = 1_000
    max_wait_ms: int = 5_000  # upper bound for `Prefer: wait=MS`
    idempotency_ttl_s: int = 7 * 24 * 3600
    default_currency: str = "INR"
    default_user_id: str = "anonymous"
    default_merchant_type: str = "general"
    max_header_bytes: int = 16_384  # names + values of all request headers; else 431
    max_json_depth: int = 32  # nesting of arrays/objects in a body; else 400
    max_text_length: int = 64  # user_id and merchant_type; at most TEXT_CEILING
    # Per API client: at most `rate_limit` requests (each transaction of a batch counts)
    # per `rate_window_s`, shared by every api replica through Redis; 0 turns it off.
    rate_limit: int = 0
    rate_window_s: float = 1.0
    key_refresh_s: float = 1.0  # revoked API keys stop working within this many seconds
    cors_origins: str = ""  # comma-separated origins allowed by CORS; empty: CORS off

    # Auth: comma-separated `name=sha256:<hex>` pairs (see `fintrack hash-secret`).
    api_keys: str = ""
    admin_tokens: str = ""
    # Signs the notifier's sign-in cookies together with the admin token digests (which are
    # safe to show, so they alone must not be enough to forge a cookie). A plain secret:
    # never in repr, logs or error messages. Empty: digests only (the notifier warns).
    session_secret: str = field(default="", repr=False)
    insecure_open: bool = False  # no auth at all; only `run all` on loopback sets this

    # Worker.
    # Batches are only as large as the backlog; when there is one, 4,000 per read decided
    # 13-20 % more per second than 2,000 (and 2,000 5-7 % more than 1,000): a user's share
    # of a batch's work is spread over more of the user's transactions. The batch's Redis
    # scripts run in calls of at most 500 ledgers / 1,000 entries, so that api hand-offs
    # run in between (``fraud._scripts.LEDGER_CHUNK`` and ``PUBLISH_CHUNK``).
    worker_batch_size: int = 4_000
    worker_block_ms: int = 1_000
    # Caught up, a worker waits this long after committing a batch (whose events are then
    # published meanwhile) before reading again, so that a trickle of transactions makes
    # fewer, larger batches: each batch costs round trips (and wake-ups) whatever its size.
    # 0: read again at once.
    worker_linger_ms: int = 2
    worker_claim_idle_ms: int = 30_000
    worker_max_attempts: int = 5
    worker_consumer: str = ""  # empty: hostname-pid, unique per process
    # Touched by a live worker loop; `fintrack health worker` checks its age. Empty: off.
    worker_heartbeat_file: str = "/tmp/fintrack-worker.heartbeat"  # noqa: S108
    activity_retention_s: int = 2 * 24 * 3600  # per-user history kept for velocity rules
    rules_file: str = ""  # TOML with rule settings; empty: built-in safe defaults
    stream_retention: int = 1_000_000  # entries kept in each stream once acked

    # Notifier.
    sse_heartbeat_s: float = 15.0
    sse_lifetime_s: float = 300.0
    sse_retry_ms: int = 3_000
    sse_client_buffer: int = 1_000
    sse_max_clients: int = 5_000

    # Local mode and logs.
    data_dir: str = ".fintrack"
    log_level: LogLevel = "info"
    log_format: LogFormat = "auto"

    # Derived, never read from the environment: {sha256 digest: client or admin name}.
    api_key_hashes: Mapping[str, str] = field(default_factory=dict, compare=False)
    admin_token_hashes: Mapping[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``env`` (default: ``os.environ``), then apply ``overrides``."""
        source = os.environ if env is None else env
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in _DERIVED:
                continue
            name = PREFIX + f.name.upper()
            if name in source:
                values[f.name] = _parse(name, source[name], hints[f.name])
        values.update(overrides)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The ``FINTRACK_*`` variables that rebuild these settings in a child process."""
        env = {}
        for f in fields(self):
            if f.name in _DERIVED:
                continue
            value = getattr(self, f.name)
            env[PREFIX + f.name.upper()] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
        return env

    def __post_init__(self) -> None:
        for name in ("api_port", "notifier_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise SettingsError(f"{PREFIX}{name.upper()}={port}: not a TCP port")
        for name in (
            "max_body_bytes",
            "max_batch_items",
            "worker_batch_size",
            "worker_max_attempts",
            "sse_client_buffer",
            "sse_max_clients",
            "http_workers",
            "idempotency_ttl_s",
            "stream_retention",
            "activity_retention_s",
            "max_header_bytes",
            "max_text_length",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"{PREFIX}{name.upper()}: must be at least 1")
        if not 0 <= self.worker_linger_ms <= 1000:
            raise SettingsError(f"{PREFIX}WORKER_LINGER_MS: must be between 0 and 1000")
        if self.max_json_depth < 2:
            # A batch is an array of objects: depth 2 is the least a valid body needs.
            raise SettingsError(f"{PREFIX}MAX_JSON_DEPTH: must be at least 2")
        if self.max_text_length > TEXT_CEILING:
            raise SettingsError(f"{PREFIX}MAX_TEXT_LENGTH: must be at most {TEXT_CEILING}")
        if self.rate_limit < 0:
            raise SettingsError(f"{PREFIX}RATE_LIMIT: must be 0 (off) or more")
        if not 0.001 <= self.rate_window_s <= 86_400:
            raise SettingsError(f"{PREFIX}RATE_WINDOW_S: must be between 0.001 and 86400")
        if self.rate_limit * self.rate_window_ms > 2**50:
            # The limiter counts in integers: the product must stay exact in Lua's doubles.
            raise SettingsError(f"{PREFIX}RATE_LIMIT × {PREFIX}RATE_WINDOW_S is too large")
        if not 0.05 <= self.key_refresh_s <= 3600:
            raise SettingsError(f"{PREFIX}KEY_REFRESH_S: must be between 0.05 and 3600")
        for origin in self.cors_origin_list:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise SettingsError(
                    f"{PREFIX}CORS_ORIGINS: {origin[:60]!r} is not an http(s) origin or *"
                )
        if len(self.default_currency) != 3 or not self.default_currency.isupper():
            raise SettingsError(f"{PREFIX}DEFAULT_CURRENCY: must be an ISO 4217 code like INR")
        if not self.key_prefix or any(c in self.key_prefix for c in " {}"):
            raise SettingsError(f"{PREFIX}KEY_PREFIX: must be non-empty, without spaces or braces")
        if self.session_secret and len(self.session_secret) < SESSION_SECRET_MIN:
            # Never echo the value, not even its length: it is a secret.
            raise SettingsError(
                f"{PREFIX}SESSION_SECRET: must be at least {SESSION_SECRET_MIN} characters "
                "(e.g. the output of `openssl rand -base64 32`)"
            )
        object.__setattr__(self, "api_key_hashes", _parse_secrets("API_KEYS", self.api_keys))
        object.__setattr__(
            self, "admin_token_hashes", _parse_secrets("ADMIN_TOKENS", self.admin_tokens)
        )

    @property
    def auth_enabled(self) -> bool:
        return not self.insecure_open

    @property
    def rate_window_ms(self) -> int:
        return max(1, round(self.rate_window_s * 1000))

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.cors_origins.split(",") if o.strip()]

    @property
    def txn_stream(self) -> str:
        return f"{self.key_prefix}:txns"

    @property
    def event_stream(self) -> str:
        return f"{self.key_prefix}:events"

    @property
    def dead_letter_stream(self) -> str:
        return f"{self.key_prefix}:txns:dead"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def require(self, *names: str) -> None:
        """Fail naming the first of ``names`` (field names) that is not configured."""
        for name in names:
            if not getattr(self, name):
                raise SettingsError(f"{PREFIX}{name.upper()} is not set")

    def __repr__(self) -> str:
        # Connection URLs may carry passwords: never print them whole.
        return f"Settings(key_prefix={self.key_prefix!r}, api_port={self.api_port}, ...)"


_DERIVED = frozenset({"api_key_hashes", "admin_token_hashes"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _parse(name: str, raw: str, hint: Any) -> Any:
    text = raw.strip()
    if hint is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise SettingsError(f"{name}={raw!r}: expected true or false")
    if hint is int or hint is float:
        try:
            return hint(text.replace("_", ""))
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected a number") from None
    choices = get_args(hint)
    if choices:
        if text.lower() not in choices:
            raise SettingsError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
        return text.lower()
    return text


def _parse_secrets(var: str, raw: str) -> dict[str, str]:
    """``name=sha256:<hex>,...`` → {digest: name}. Plain secrets are refused.

    A name may appear with two digests: that is how a key is rotated (old and new both
    valid until the old one is removed).
    """
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, digest = item.partition("=")
        if not sep or not name or not digest.startswith("sha256:") or len(digest) != 71:
            # Never echo the value: it might be a plain secret pasted by mistake.
            raise SettingsError(
                f"{PREFIX}{var}: each entry must be name=sha256:<64 hex digits> "
                "(use `fintrack hash-secret` to make one)"
            )
        if digest in result:
            raise SettingsError(f"{PREFIX}{var}: the same secret is listed twice")
        result[digest] = name
    return result
