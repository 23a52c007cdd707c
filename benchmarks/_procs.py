"""Server processes for a benchmark: started on loopback, measured, always stopped.

Children get a raised open-files limit (``RLIMIT_NOFILE`` soft = hard) and die with the
benchmark (parent-death signal), each in its own session so its whole process tree
(Granian or uvicorn workers) can be signalled at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    import psutil

_PR_SET_PDEATHSIG = 1
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 15.0


class BenchError(Exception):
    """A benchmark could not run (a server did not start, a scenario went wrong)."""


def raise_fd_limit() -> int:
    """Raise this process's soft open-files limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _child_setup() -> Callable[[], None]:
    parent = os.getpid()
    # Resolved before fork: dlopen in the child could deadlock on a lock held at fork time.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        # The `ulimit -n` a production unit file would set: soft = hard.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # we died before prctl took effect
            os._exit(1)

    return setup


@dataclass
class Server:
    """A started process (and its tree), where it listens, and its log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    base_url: str = ""
    port: int = 0
    _stopped: bool = field(default=False, repr=False)

    def tree(self) -> list[psutil.Process]:
        """The process and all its descendants that are alive now."""
        import psutil  # a dev dependency: imported when used, so a missing one is reported

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        """Resident memory of the whole tree, in bytes."""
        import psutil

        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time consumed so far by the whole tree."""
        import psutil

        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """SIGTERM the process, wait, then SIGKILL whatever is left of its session."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(STOP_GRACE_S)
        # Workers of a server that was killed, or that ignored SIGTERM.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)


def spawn(
    name: str,
    argv: list[str],
    *,
    env: Mapping[str, str],
    log_dir: Path,
    cwd: Path | None = None,
) -> Server:
    """Start ``argv`` with output to ``log_dir/name.log``."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_child_setup(),
        )
    return Server(name, proc, log_path)


def wait_healthy(server: Server, path: str = "/health") -> None:
    """Poll ``GET path`` until it answers 200; fail with the server's log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while True:
            server.check_alive()
            try:
                if client.get(server.base_url + path).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise BenchError(f"{server.name} did not become healthy:\n{server.log_tail()}")
            time.sleep(0.1)


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``check`` until true; raise ``BenchError`` naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)
