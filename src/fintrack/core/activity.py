"""Per-user activity: the ledger velocity rules count over.

The api records each accepted transaction in ``{prefix}:activity:{user_id}`` (a sorted set)
in the same atomic script that enqueues it, scored by its position in the transactions
stream. Workers only read it. Because the score is the stream position, a transaction's
velocity figures are the same whichever worker decides it, however late, and however often
it is redelivered: "transactions of this user accepted in the window before this one".
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

from fintrack.config import Settings
from fintrack.core.models import Transaction

_SEQ_SLOTS = 1000  # stream ids within one millisecond; more than this share a score


class Activity(NamedTuple):
    """One past transaction of a user, as the velocity rules see it."""

    score: int  # stream position: milliseconds * 1000 + sequence
    txn_id: UUID
    amount: Decimal
    currency: str


def activity_key(settings: Settings, user_id: str) -> str:
    return f"{settings.key_prefix}:activity:{user_id}"


def encode_member(txn: Transaction, txn_id: str | None = None) -> str:
    """The ledger member of ``txn``; ``txn_id``: its id as text, if the caller has it
    (turning a UUID into text is a large part of the cost)."""
    return f"{txn_id or txn.txn_id}|{txn.amount}|{txn.currency}"


def decode_member(member: bytes | str, score: float) -> Activity:
    text = member.decode() if isinstance(member, bytes) else member
    txn_id, amount, currency = text.split("|")
    return Activity(int(score), UUID(txn_id), Decimal(amount), currency)


def entry_score(entry_id: bytes | str) -> int:
    """A stream entry id ``ms-seq`` as a sorted-set score that stays exact in a double."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms) * _SEQ_SLOTS + min(int(seq or 0), _SEQ_SLOTS - 1)


def window_start(score: int, window_s: int) -> int:
    """The exclusive lower bound of a window of ``window_s`` seconds ending at ``score``."""
    return score - window_s * 1000 * _SEQ_SLOTS
