"""Ending open feeds as soon as the server is asked to stop.

Granian runs the lifespan shutdown only after in-flight requests finish, and an open feed
stays in flight until its lifetime ends, so the lifespan alone would hold SIGTERM up for
minutes. We therefore also watch SIGTERM/SIGINT ourselves. Our Python-level handler runs
alongside the event loop's own (which Granian uses to stop the server): CPython writes each
signal to the loop's wakeup fd whichever Python handler is installed.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def on_stop_signal(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` on the running loop when SIGTERM or SIGINT arrives, then let the
    signal have its previous effect. Handlers are restored on exit."""
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(callback)
        before = previous.get(signum)
        if callable(before):
            before(signum, frame)
        elif before == signal.SIG_DFL:
            # Nobody else handles it: restore the default and deliver it again.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    try:
        for sig in _STOP_SIGNALS:
            previous[sig] = signal.getsignal(sig)
            signal.signal(sig, handler)
    except ValueError:
        # Not the main thread (an embedding server): feeds then end at their lifetime.
        log.warning("stop signals not watched; feeds end at their lifetime on shutdown")
    try:
        yield
    finally:
        for signum, before in previous.items():
            if before is not None:
                signal.signal(signum, before)
