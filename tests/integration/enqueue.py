"""Enqueue transactions exactly as the api does, for worker tests and benchmarks.

One Lua call per chunk: for each transaction XADD the ``txn`` field to the transactions
stream and, atomically with it, record the activity-ledger member scored by the new
entry's stream position (``core.activity.entry_score``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from decimal import Decimal

import redis

from fintrack.config import Settings
from fintrack.core.activity import activity_key, encode_member
from fintrack.core.models import Transaction, transaction_encoder

# KEYS[1]: txns stream; KEYS[i+1]: activity key of transaction i. ARGV: payload, member...
# The score is ms * 1000 + min(seq, 999), as core.activity.entry_score computes it; built
# as text so it stays exact.
_ENQUEUE = """
local ids = {}
for i = 2, #KEYS do
  local id = redis.call('XADD', KEYS[1], '*', 'txn', ARGV[2 * i - 3])
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  seq = math.min(tonumber(seq), 999)
  redis.call('ZADD', KEYS[i], ms .. string.format('%03d', seq), ARGV[2 * i - 2])
  ids[#ids + 1] = id
end
return ids
"""


def make_txn(
    *,
    user_id: str = "user_1",
    amount: str = "100.00",
    currency: str = "INR",
    merchant_type: str = "general",
    source_ip: str = "192.0.2.10",
    client_id: str = "acme",
) -> Transaction:
    """A valid transaction received now."""
    return Transaction(
        txn_id=uuid.uuid4(),
        user_id=user_id,
        amount=Decimal(amount),
        currency=currency,
        merchant_type=merchant_type,
        source_ip=source_ip,
        client_id=client_id,
        received_at_ms=time.time_ns() // 1_000_000,
    )


def enqueue(
    client: redis.Redis, settings: Settings, txns: Sequence[Transaction], *, chunk: int = 500
) -> list[str]:
    """Enqueue ``txns`` in order; returns their stream entry ids."""
    script = client.register_script(_ENQUEUE)
    ids: list[str] = []
    for start in range(0, len(txns), chunk):
        part = txns[start : start + chunk]
        keys = [settings.txn_stream, *(activity_key(settings, t.user_id) for t in part)]
        args: list[bytes | str] = []
        for t in part:
            args += [transaction_encoder.encode(t), encode_member(t)]
        ids += [i.decode() for i in script(keys=keys, args=args)]
    return ids


def enqueue_raw(client: redis.Redis, settings: Settings, fields: dict[str, bytes]) -> str:
    """Enqueue an entry with arbitrary fields (a poison entry); returns its id."""
    entry_id = client.xadd(settings.txn_stream, fields)  # type: ignore[arg-type]
    return entry_id.decode()
