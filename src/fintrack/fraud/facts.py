"""What the rules know about a transaction beyond its own fields.

The worker gathers facts from Redis (through ``fraud.velocity``) before calling the pure
engine, so the rules themselves never do I/O.
"""

from __future__ import annotations

from decimal import Decimal

import msgspec


class WindowStats(msgspec.Struct, frozen=True):
    """A user's activity in one velocity window ending at (and including) a transaction.

    ``count`` counts the user's transactions with an activity score in
    ``(score - window, score]``; ``amount`` is their total in the base currency, exact.
    ``unpriced`` counts those left out of ``amount`` because the settings have no rate for
    their currency (they are still in ``count``). ``unsummed`` counts the oldest ones left
    out of ``amount`` because the window held more than the worker sums per window
    (``fraud.velocity.SUM_CAP``): ``amount`` is then a lower bound.
    """

    window_s: int
    count: int
    amount: Decimal
    unpriced: int = 0
    unsummed: int = 0


class Facts(msgspec.Struct, frozen=True):
    """Everything the rules may consult besides the transaction and the settings."""

    velocity: tuple[WindowStats, ...] = ()
