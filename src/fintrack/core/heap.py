"""The garbage collector's settings for the long-running roles (api, worker, notifier).

A full collection walks every object the collector tracks, and stops the process while it
does: with the api's ~85,000 objects after start-up that took 60 ms on the 2-core machine,
a pause every request in flight waited for, and it came every few seconds under load.
Objects that live for the whole process (modules, the app, its routes, connection pools)
are frozen once start-up is done, so no collection walks them again; what requests and
batches allocate is short-lived and seldom cyclic, so collections can also come less often.
"""

from __future__ import annotations

import gc
from typing import Final

# Objects allocated (less freed) before a young collection; then how many young
# collections before a middle one, and middle ones before a full one. Python's defaults
# are (700, 10, 10); these measured ~7% less CPU in the worker.
THRESHOLDS: Final = (20_000, 50, 100)
_settled = False


def settle_after_startup() -> None:
    """Collect what start-up left behind, freeze what survives and collect less often.

    Called when start-up is done (in a Granian worker's lifespan, or before a worker's
    first batch); only the first call in a process does anything, so an app started
    again in the same process (tests do) does not pay a full collection each time.
    Frozen objects are still freed when nothing refers to them; only a reference cycle
    among them is never collected, and start-up's survivors live as long as the process.
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
