"""The I/O half of ``fintrack simulate``: an open-loop sender and a decision poller.

Open loop: transaction ``i`` is due at ``start + i / rate`` whether or not earlier requests
have been answered, and its latency is measured from that due time. A slow api therefore
shows up as latency (requests queue for a connection) instead of silently lowering the
offered load, which is what a closed loop ("send the next one when the last returns") does.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

import httpx
import msgspec

from fintrack._simulate_traffic import SimulatedTxn
from fintrack.core.models import FINAL_STATUSES

_FINAL = frozenset(FINAL_STATUSES)


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to one POST: the HTTP status, or the transport error's type name."""

    status_code: int | None
    error: str | None
    latency_ms: float  # from the due time to the end of the response


class SendResult(msgspec.Struct, frozen=True, kw_only=True):
    """Every transaction sent, in order, with its outcome, and how long sending took."""

    txns: list[SimulatedTxn]
    outcomes: list[Outcome]
    elapsed_s: float  # from the first due time to the last response


class _StatusOnly(msgspec.Struct):
    status: str


class _ExportRow(msgspec.Struct):
    txn_id: uuid.UUID
    status: str


_status_decoder = msgspec.json.Decoder(_StatusOnly)
_row_decoder = msgspec.json.Decoder(_ExportRow)


async def send_open_loop(
    client: httpx.AsyncClient,
    txns: Iterable[SimulatedTxn],
    *,
    total: int,
    rate: float,
    headers: Mapping[str, str],
    max_in_flight: int,
    on_sent: Callable[[], None] = lambda: None,
) -> SendResult:
    """POST the first ``total`` of ``txns`` to ``/transactions`` at ``rate`` per second.

    At most ``max_in_flight`` requests are outstanding; beyond that the schedule slips,
    which the latencies (measured from each due time) reveal.
    """
    loop = asyncio.get_running_loop()
    sent: list[SimulatedTxn] = []
    outcomes: list[Outcome | None] = [None] * total
    slots = asyncio.Semaphore(max_in_flight)
    last_done = 0.0

    async def post(i: int, txn: SimulatedTxn, due: float) -> None:
        nonlocal last_done
        code: int | None = None
        error: str | None = None
        try:
            response = await client.post("/transactions", content=txn.body, headers=headers)
            code = response.status_code
        except httpx.HTTPError as e:
            error = type(e).__name__
        finally:
            slots.release()
        last_done = loop.time()
        outcomes[i] = Outcome(status_code=code, error=error, latency_ms=(last_done - due) * 1000.0)
        on_sent()

    start = loop.time()
    async with asyncio.TaskGroup() as tasks:
        for i, txn in enumerate(itertools.islice(txns, total)):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            sent.append(txn)
            tasks.create_task(post(i, txn, due))
    done = [o for o in outcomes if o is not None]
    return SendResult(txns=sent, outcomes=done, elapsed_s=max(last_done - start, 0.0))


async def await_decisions(
    client: httpx.AsyncClient,
    txn_ids: Iterable[uuid.UUID],
    *,
    since: datetime,
    timeout_s: float,
    headers: Mapping[str, str],
    concurrency: int,
    on_decided: Callable[[int], None] = lambda _: None,
) -> dict[uuid.UUID, str]:
    """Wait until every id has a final status or ``timeout_s`` passes; returns the final
    status of each id decided in time (the others are absent).

    Each round reads the NDJSON export (``GET /transactions?since=``: one request for
    thousands of decisions). Ids it does not show for two rounds in a row — replays of a
    run from before ``since``, or an api without the export — are asked one by one
    (``GET /transactions/{id}``, ``concurrency`` at a time).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    pending = set(txn_ids)
    decided: dict[uuid.UUID, str] = {}
    slots = asyncio.Semaphore(concurrency)
    use_export = True
    idle_rounds = 0

    def found(txn_id: uuid.UUID, status: str) -> None:
        if txn_id in pending and status in _FINAL:
            decided[txn_id] = status
            pending.discard(txn_id)
            on_decided(1)

    async def export_round() -> bool:
        """False if the api has no usable export."""
        params = {"since": since.isoformat()}
        async with client.stream("GET", "/transactions", params=params, headers=headers) as r:
            if r.status_code != 200:
                return False
            async for line in r.aiter_lines():
                if line.strip():
                    try:
                        row = _row_decoder.decode(line)
                    except msgspec.DecodeError:
                        return False
                    found(row.txn_id, row.status)
        return True

    async def check(txn_id: uuid.UUID) -> None:
        async with slots:
            try:
                response = await client.get(f"/transactions/{txn_id}", headers=headers)
            except httpx.HTTPError:
                return  # counted as undecided unless a later round gets through
        if response.status_code == 200:
            try:
                found(txn_id, _status_decoder.decode(response.content).status)
            except msgspec.DecodeError:
                return

    while pending and loop.time() < deadline:
        before = len(pending)
        try:
            async with asyncio.timeout_at(deadline):
                if use_export:
                    try:
                        use_export = await export_round()
                    except httpx.HTTPError:
                        use_export = False
                idle_rounds = idle_rounds + 1 if len(pending) == before else 0
                if pending and (not use_export or idle_rounds >= 2):
                    async with asyncio.TaskGroup() as tasks:
                        for txn_id in list(pending):
                            tasks.create_task(check(txn_id))
        except TimeoutError:
            break
        if pending:
            # Give the workers a moment; the deadline bounds the whole wait.
            await asyncio.sleep(min(0.2, max(deadline - loop.time(), 0.0)))
    return decided
