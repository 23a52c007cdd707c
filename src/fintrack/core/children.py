"""Child processes that never outlive their parent: embedded servers, the roles of
`run all`, and Granian's worker processes."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import pwd
import signal
import subprocess
from collections.abc import Mapping
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def _bind_to_parent(prctl: Any, parent: int, death_signal: signal.Signals) -> bool:
    """Have the kernel send us ``death_signal`` when ``parent`` exits; False if it already
    has (before prctl took effect, so no signal will come)."""
    prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
    return os.getppid() == parent


def spawn_child(
    argv: list[str],
    log: IO[bytes] | None,
    death_signal: signal.Signals,
    user: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` so that it gets ``death_signal`` when the spawning thread dies.

    ``log`` None means the child writes to our own stdout/stderr (one log stream).
    The child gets its own session: a terminal Ctrl-C reaches only us, and we stop
    children in order.
    """
    parent = os.getpid()
    # Resolved in the parent: dlopen in the forked child could deadlock on a lock held by
    # another thread at fork time.
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def die_with_parent() -> None:
        # Runs after subprocess's setuid (a uid change clears PDEATHSIG). The signal fires when
        # the *thread* that forked exits, so start children from a long-lived thread.
        if not _bind_to_parent(prctl, parent, death_signal):
            os._exit(1)

    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=None if log is None else subprocess.STDOUT,
        start_new_session=True,
        user=user,
        group=None if user is None else pwd.getpwnam(user).pw_gid,
        extra_groups=None if user is None else [],
        preexec_fn=die_with_parent,
        env=None if env is None else dict(env),
    )


def stop_with_parent_process() -> None:
    """In a ``multiprocessing`` child (a Granian worker): have the kernel send it SIGTERM
    when its parent process exits; no-op in any other process.

    Granian's main process stops its workers when it is stopped, but if it is killed (an
    OOM killer, a supervisor's SIGKILL after its stop timeout) a worker would serve on,
    unsupervised, holding the port. Granian forks its workers from its main thread, which
    lives as long as the process (the signal fires when the forking *thread* exits)."""
    parent = multiprocessing.parent_process()
    if parent is None or parent.pid is None:
        return
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if not _bind_to_parent(prctl, parent.pid, signal.SIGTERM):
        os.kill(os.getpid(), signal.SIGTERM)
