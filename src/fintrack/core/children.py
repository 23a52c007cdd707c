"""Child processes that never outlive us: embedded servers and the roles of `run all`."""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import subprocess
from collections.abc import Mapping
from typing import IO

_PR_SET_PDEATHSIG = 1


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
        prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # parent died before prctl took effect
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
