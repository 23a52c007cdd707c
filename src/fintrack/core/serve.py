"""Run an ASGI app factory under Granian: the api and the notifier share this."""

from __future__ import annotations

from pathlib import Path


def serve(
    target: str,
    *,
    host: str,
    port: int,
    workers: int,
    kill_timeout_s: int,
    backpressure: int | None = None,
) -> None:
    """Serve ``module:factory`` on host:port until SIGINT/SIGTERM.

    The factory reads its settings from the environment in each Granian worker process.
    On SIGTERM Granian waits for in-flight requests; ``kill_timeout_s`` bounds that wait,
    which matters for open SSE streams (they count as in-flight). ``backpressure`` caps
    concurrent requests per worker; open SSE streams count, so the notifier raises it.
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops

    Granian(
        target,
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        backlog=4096,
        backpressure=backpressure,
        workers_kill_timeout=kill_timeout_s,
        log_access=False,
        working_dir=Path.cwd(),
    ).serve()
