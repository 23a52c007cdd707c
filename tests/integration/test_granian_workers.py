"""Granian's worker processes never outlive its main process.

Killed outright (an OOM killer, a supervisor's SIGKILL after its stop timeout), Granian's
main process can't stop its workers; each of ours has the kernel send it SIGTERM then
(``core.children.stop_with_parent_process``), instead of serving on, unsupervised,
holding the port.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import psutil
import pytest

from conftest import RoleProcess, wait_until
from fintrack.config import Settings


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("role", ["api", "notifier"])
def test_workers_stop_when_the_main_process_is_killed(
    start_role: Callable[..., RoleProcess], settings: Settings, role: str
) -> None:
    served = start_role(role, settings)
    workers = psutil.Process(served.proc.pid).children()
    assert workers, "Granian started no worker process"
    os.kill(served.proc.pid, signal.SIGKILL)
    served.proc.wait(5)
    wait_until(lambda: all(_gone(w) for w in workers), 15, f"the {role}'s workers to stop")
