"""Embedded Valkey and PostgreSQL against the real binaries: lifecycle, persistence, errors."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from fintrack.core.embedded import (
    EmbeddedPostgres,
    EmbeddedServerError,
    EmbeddedValkey,
    free_port,
)


def _gone(pid: int, timeout: float = 15.0) -> bool:
    """True once `pid` no longer runs (a zombie waiting for a reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def listener() -> Iterator[int]:
    """A port on 127.0.0.1 that something else is already listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_valkey_keeps_aof_data_across_restart(tmp_path: Path) -> None:
    """Valkey data written before stop() is read back after restarting on the same dir."""
    server = EmbeddedValkey(tmp_path / "valkey")
    with server:
        pid = server.pid
        assert pid is not None
        assert server.url.startswith("redis://127.0.0.1:")
        client = redis.Redis.from_url(server.url)
        client.set("txn:1", "flagged")
        client.close()
    assert _gone(pid)
    assert server.pid is None

    with server:
        client = redis.Redis.from_url(server.url)
        assert client.get("txn:1") == b"flagged"
        client.close()


def test_postgres_keeps_data_across_restart(tmp_path: Path) -> None:
    """Postgres rows survive stop() and a restart on the same data dir; no process is left."""
    server = EmbeddedPostgres(tmp_path / "pg")
    with server:
        pid = server.pid
        assert pid is not None
        assert server.url.endswith("/fintrack")
        with psycopg.connect(server.url) as conn:
            conn.execute("CREATE TABLE alerts (id int PRIMARY KEY, reason text)")
            conn.execute("INSERT INTO alerts VALUES (1, 'velocity')")
            backends = [p.pid for p in psutil.Process(pid).children(recursive=True)]
    assert backends
    assert all(_gone(p) for p in [pid, *backends])
    server.stop()  # idempotent

    with server, psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT reason FROM alerts").fetchall() == [("velocity",)]


@pytest.mark.parametrize("server_cls", [EmbeddedValkey, EmbeddedPostgres])
def test_port_in_use_names_the_port(
    tmp_path: Path, listener: int, server_cls: type[EmbeddedValkey | EmbeddedPostgres]
) -> None:
    """Starting on a port another socket listens on raises an error naming that port."""
    server = server_cls(tmp_path / "data", port=listener)
    with pytest.raises(
        EmbeddedServerError, match=f"port {listener} on 127.0.0.1 is already in use"
    ):
        server.start()
    assert server.pid is None


def test_explicit_port_is_used(tmp_path: Path) -> None:
    """A free explicit port is the one the server listens on and puts in its url."""
    port = free_port()
    with EmbeddedValkey(tmp_path / "valkey", port=port) as server:
        assert server.url == f"redis://127.0.0.1:{port}/0"
        assert redis.Redis(port=port).ping()


def test_valkey_exit_during_start_reports_log_tail(tmp_path: Path) -> None:
    """A server that dies while starting raises with the tail of its log file."""
    aof_dir = tmp_path / "valkey" / "appendonlydir"
    aof_dir.mkdir(parents=True)
    (aof_dir / "appendonly.aof.manifest").write_text("not a manifest\n")
    with pytest.raises(
        EmbeddedServerError, match=r"(?s)exited with code 1 during start.*Invalid AOF manifest"
    ):
        EmbeddedValkey(tmp_path / "valkey").start()


_HOLDER = """
import sys, time
from pathlib import Path
from fintrack.core import embedded
server = getattr(embedded, sys.argv[1])(Path(sys.argv[2]))
server.start()
print(server.pid, flush=True)
time.sleep(600)
"""


_PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Orphans of our children are re-parented to us, so their exit is observed by waitpid."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _reaped(pid: int, timeout: float = 15.0) -> bool:
    """Wait for our (adopted) child `pid` to exit and reap it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.usefixtures("subreaper")
@pytest.mark.parametrize("kind", ["EmbeddedValkey", "EmbeddedPostgres"])
def test_server_dies_with_hard_killed_parent(tmp_path: Path, kind: str) -> None:
    """SIGKILL of the owning process takes the server (and its backends) down: no orphan."""
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_HOLDER), kind, str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdout is not None
        pid = int(holder.stdout.readline())
        backends = [p.pid for p in psutil.Process(pid).children(recursive=True)]
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        try:
            assert _reaped(pid)
            assert all(_gone(p) for p in backends)
        finally:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
