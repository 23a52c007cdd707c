"""Container health probes: ``fintrack health api|worker|notifier``.

Docker's HEALTHCHECK and ECS's ``healthCheck`` run these inside the container, where the
slim image has no curl. Each probe answers with a :class:`Verdict`; the CLI prints its
line and exits 0 or 1 (Docker reserves exit code 2).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from fintrack.config import Settings

HTTP_TIMEOUT_S = 2.0
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one probe: healthy or not, and one short line saying why."""

    ok: bool
    reason: str


def health_url(role: str, settings: Settings) -> str:
    """The ``/health`` URL of an HTTP role as seen from inside its own container.

    A wildcard bind address (0.0.0.0 in containers) is reached through loopback.
    """
    if role == "api":
        host, port = settings.api_host, settings.api_port
    elif role == "notifier":
        host, port = settings.notifier_host, settings.notifier_port
    else:
        raise ValueError(f"{role!r} has no HTTP listener")
    host = "127.0.0.1" if host in _WILDCARDS else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{port}/health"


def check_http(url: str, timeout_s: float = HTTP_TIMEOUT_S) -> Verdict:
    """Healthy when ``GET url`` answers 200 within ``timeout_s``."""
    import httpx  # here, not at the top: the worker's probe (run every few seconds) skips it

    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.TimeoutException:
        return Verdict(False, f"{url}: no answer within {timeout_s:g} s")
    except httpx.HTTPError as e:
        return Verdict(False, f"{url}: {type(e).__name__}: {e}")
    if response.status_code != 200:
        return Verdict(False, f"{url}: answered {response.status_code}")
    return Verdict(True, f"{url}: 200")


def default_max_age_s(settings: Settings) -> float:
    """How old the worker heartbeat may get: three loop iterations of the longest block.

    The loop touches the file once per iteration and an idle iteration lasts about
    ``worker_block_ms``; the 5 s floor keeps a very short block from making a busy
    (slow-batch) worker look dead.
    """
    return 3 * max(settings.worker_block_ms / 1000, 5.0)


def check_heartbeat(path: str, max_age_s: float, *, now: float | None = None) -> Verdict:
    """Healthy when the heartbeat file at ``path`` was touched less than ``max_age_s`` ago."""
    if not path:
        return Verdict(False, "heartbeat is off (FINTRACK_WORKER_HEARTBEAT_FILE is empty)")
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return Verdict(False, f"no heartbeat file at {path}: the worker loop has not run")
    except OSError as e:
        return Verdict(False, f"cannot read heartbeat file {path}: {e.strerror}")
    age = (time.time() if now is None else now) - mtime
    if age > max_age_s:
        return Verdict(False, f"heartbeat is {age:.1f} s old (limit {max_age_s:g} s): {path}")
    return Verdict(True, f"heartbeat {max(age, 0.0):.1f} s old")


def check_role(
    role: str, settings: Settings, *, url: str | None = None, max_age_s: float | None = None
) -> Verdict:
    """Probe ``role`` (api, notifier or worker) the way its container health check does."""
    if role == "worker":
        limit = default_max_age_s(settings) if max_age_s is None else max_age_s
        return check_heartbeat(settings.worker_heartbeat_file, limit)
    return check_http(url or health_url(role, settings))
