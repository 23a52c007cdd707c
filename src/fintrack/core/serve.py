"""Run an ASGI app factory under Granian: the api and the notifier share this."""

from __future__ import annotations

from pathlib import Path
from typing import Final

# Idle keep-alive connections live this long (ms) between requests. It must exceed the idle
# timeout of the load balancer in front (an ALB's default is 60 s): if the server closed a
# connection first, the balancer could send the next request into a closing socket (a 502).
KEEP_ALIVE_MS: Final = 75_000


def serve(
    target: str,
    *,
    host: str,
    port: int,
    workers: int,
    kill_timeout_s: int,
    backpressure: int | None = None,
    rsgi: bool = False,
) -> None:
    """Serve ``module:factory`` on host:port until SIGINT/SIGTERM.

    The factory reads its settings from the environment in each Granian worker process.
    On SIGTERM Granian waits for in-flight requests; ``kill_timeout_s`` bounds that wait,
    which matters for open SSE streams (they count as in-flight). ``backpressure`` caps
    connections per worker (Granian's default: backlog / workers); idle keep-alive connections
    and open SSE streams count, so both roles raise it.
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings

    Granian(
        target,
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI if rsgi else Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        backlog=4096,
        backpressure=backpressure,
        # Granian waits this long for the next request's headers on a kept-alive connection.
        http1_settings=HTTP1Settings(header_read_timeout=KEEP_ALIVE_MS),
        workers_kill_timeout=kill_timeout_s,
        log_access=False,
        working_dir=Path.cwd(),
    ).serve()
