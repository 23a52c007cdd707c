"""``fintrack run all``: every role on one machine, for demos and development.

Without configured URLs it starts embedded Valkey and PostgreSQL (data under
``settings.data_dir``, kept between runs), migrates, then supervises the api, the notifier
and N workers as child processes sharing this terminal. One Ctrl-C (or SIGTERM) stops
the api first (no new work), then the workers (they finish and ack their batch), then the
notifier, then the servers. If any role dies, everything stops and the exit code is 1.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import replace

import httpx

from fintrack.config import Settings
from fintrack.core.children import spawn_child
from fintrack.core.db import migrate
from fintrack.core.embedded import EmbeddedPostgres, EmbeddedServerError, EmbeddedValkey

STOP_GRACE_S = 15.0
START_TIMEOUT_S = 30.0
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class LocalRunError(Exception):
    """``run all`` cannot start; the message names the cause."""


def run_all(settings: Settings, *, workers: int) -> int:
    """Run everything until interrupted; returns the process exit code."""
    # httpx logs every request at INFO: the health polls below would flood the terminal.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        # Ports first: a busy port must fail in a moment, not after starting the servers.
        for host, port in (
            (settings.api_host, settings.api_port),
            (settings.notifier_host, settings.notifier_port),
        ):
            _check_port_free(host, port)
        settings = _open_if_unconfigured(settings)
        with ExitStack() as stack:
            settings = _with_servers(settings, stack)
            migrate(settings.database_url)
            children = _start_roles(settings, workers)
            stack.callback(_stop_roles, children)
            _wait_healthy(settings, children, stop)
            if not stop.is_set():
                _banner(settings, workers)
            return _supervise(children, stop)
    except (LocalRunError, EmbeddedServerError) as e:
        print(f"fintrack run all: {e}", file=sys.stderr)
        return 2


def _with_servers(settings: Settings, stack: ExitStack) -> Settings:
    """Start embedded servers for whichever of Redis/PostgreSQL has no URL configured."""
    data = settings.data_path.resolve()
    if not settings.redis_url:
        valkey = stack.enter_context(EmbeddedValkey(data / "valkey"))
        settings = replace(settings, redis_url=valkey.url)
        print(f"embedded Valkey on {valkey.url} (data in {data / 'valkey'})", file=sys.stderr)
    if not settings.database_url:
        postgres = stack.enter_context(EmbeddedPostgres(data / "postgres"))
        settings = replace(settings, database_url=postgres.url)
        print(
            f"embedded PostgreSQL on {postgres.url} (data in {data / 'postgres'})", file=sys.stderr
        )
    return settings


def _open_if_unconfigured(settings: Settings) -> Settings:
    """No keys and loopback only: run open, so the quick-start curl works verbatim."""
    if settings.api_key_hashes or settings.admin_token_hashes or settings.insecure_open:
        return settings
    if settings.api_host not in _LOOPBACK or settings.notifier_host not in _LOOPBACK:
        raise LocalRunError(
            "no FINTRACK_API_KEYS/FINTRACK_ADMIN_TOKENS configured and a listener is not on "
            "loopback: refusing to run without authentication"
        )
    return replace(settings, insecure_open=True)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        # Like the servers themselves: connections of a previous run still in TIME_WAIT must
        # not count as "in use" (a quick restart would fail); a listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            raise LocalRunError(f"port {port} on {host} is already in use ({e.strerror})") from e


def _start_roles(settings: Settings, workers: int) -> dict[str, subprocess.Popen[bytes]]:
    env = {**_base_env(), **settings.to_env()}
    argv = [sys.executable, "-m", "fintrack", "run"]
    children = {"api": spawn_child([*argv, "api"], None, signal.SIGTERM, env=env)}
    for i in range(workers):
        name = f"worker-{i + 1}"
        children[name] = spawn_child(
            [*argv, "worker", "--consumer", f"local-{name}"], None, signal.SIGTERM, env=env
        )
    children["notifier"] = spawn_child([*argv, "notifier"], None, signal.SIGTERM, env=env)
    return children


def _base_env() -> dict[str, str]:
    # Our own settings are passed explicitly; stale FINTRACK_* values must not leak in.
    return {k: v for k, v in os.environ.items() if not k.startswith("FINTRACK_")}


def _wait_healthy(
    settings: Settings, children: dict[str, subprocess.Popen[bytes]], stop: threading.Event
) -> None:
    urls = {
        "api": f"http://{settings.api_host}:{settings.api_port}/health",
        "notifier": f"http://{settings.notifier_host}:{settings.notifier_port}/health",
    }
    deadline = time.monotonic() + START_TIMEOUT_S
    pending = dict(urls)
    while pending and not stop.is_set():
        for role, url in list(pending.items()):
            if children[role].poll() is not None:
                raise LocalRunError(f"the {role} exited during start (see its log above)")
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    del pending[role]
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            raise LocalRunError(f"{', '.join(pending)} did not become healthy in time")
        stop.wait(0.1)


def _banner(settings: Settings, workers: int) -> None:
    api = f"http://{settings.api_host}:{settings.api_port}"
    dashboard = f"http://{settings.notifier_host}:{settings.notifier_port}/"
    lines = [
        "FinTrack-Sentinel is running",
        f"  api        {api}  (POST /transactions)",
        f"  dashboard  {dashboard}",
        f"  workers    {workers}",
    ]
    if settings.insecure_open:
        lines += [
            "",
            "  !! OPEN MODE: no API keys or admin tokens configured, so NOTHING is",
            "  !! authenticated. Fine on loopback for a demo; never expose these ports.",
            "  !! Set FINTRACK_API_KEYS and FINTRACK_ADMIN_TOKENS to turn auth on.",
        ]
    else:
        lines.append("  sign in to the dashboard with an admin token (FINTRACK_ADMIN_TOKENS)")
    lines += [
        "",
        f"  try: curl -X POST {api}/transactions -d "
        '\'{"amount": 200000, "source_ip": "12.34.56.78"}\'',
        "  Ctrl-C stops everything.",
    ]
    width = max(map(len, lines)) + 2
    print(
        "\n" + "=" * width + "\n" + "\n".join(lines) + "\n" + "=" * width + "\n",
        file=sys.stderr,
        flush=True,
    )


def _supervise(children: dict[str, subprocess.Popen[bytes]], stop: threading.Event) -> int:
    while not stop.is_set():
        for role, proc in children.items():
            if proc.poll() is not None:
                print(
                    f"fintrack run all: the {role} exited with {proc.returncode}; stopping",
                    file=sys.stderr,
                )
                return 1
        stop.wait(0.2)
    return 0


def _stop_roles(children: dict[str, subprocess.Popen[bytes]]) -> None:
    """api first (stop taking work), then workers (drain), then the notifier."""
    order = ["api"] + [r for r in children if r.startswith("worker")] + ["notifier"]
    for group in (order[:1], order[1:-1], order[-1:]):
        for role in group:
            if children[role].poll() is None:
                children[role].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for role in group:
            try:
                children[role].wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"fintrack run all: {role} did not stop in time; killing it", file=sys.stderr)
                children[role].kill()
                children[role].wait()
