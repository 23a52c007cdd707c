"""Reference worker: one entry, one autocommit INSERT, one XACK at a time, no rules.

    REF_REDIS_URL=... REF_DATABASE_URL=... REF_STREAM=... python -m benchmarks.reference.worker

Reads what ``benchmarks.reference.app`` enqueues and stores it as APPROVED with
``decided_at = now()``, until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import cast

import psycopg
from redis.asyncio import Redis
from redis.exceptions import ResponseError

GROUP = "reference-workers"
CONSUMER = "ref"
_Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]

INSERT = """
INSERT INTO transactions (txn_id, client_id, user_id, amount, currency, merchant_type,
                          source_ip, status, risk_score, received_at, decided_at)
VALUES (%s, 'reference', %s, %s, %s, %s, %s, 'APPROVED', 0,
        timestamptz 'epoch' + %s * interval '1 millisecond', now())
ON CONFLICT (txn_id) DO NOTHING
"""


async def main() -> None:
    stream = os.environ["REF_STREAM"]
    redis = Redis.from_url(os.environ["REF_REDIS_URL"], socket_timeout=10)
    conn = await psycopg.AsyncConnection.connect(os.environ["REF_DATABASE_URL"], autocommit=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    except ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
    # Announces that the worker is up (the benchmark waits for it before sending).
    await redis.xgroup_createconsumer(stream, GROUP, CONSUMER)
    try:
        while not stop.is_set():
            reply = cast(
                _Reply, await redis.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=1, block=500)
            )
            if not reply:
                continue
            [[_, [(entry_id, fields)]]] = reply
            txn = json.loads(fields[b"data"])
            await conn.execute(
                INSERT,
                (
                    txn["txn_id"],
                    txn["user_id"],
                    txn["amount"],
                    txn["currency"],
                    txn["merchant_type"],
                    txn["source_ip"],
                    int(fields[b"received_at_ms"]),
                ),
            )
            await redis.xack(stream, GROUP, entry_id)
    finally:
        await conn.close()
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main())
