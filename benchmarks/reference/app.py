"""Reference api: FastAPI + pydantic, one XADD per request, and a naive SSE feed.

    REF_REDIS_URL=... REF_STREAM=... REF_EVENT_STREAM=... \
        uvicorn benchmarks.reference.app:app --workers 2

Deliberately plain, as a first version of such a service would be written: a pydantic
model validates the body, the handler awaits its own XADD and answers 202. The feed gives
every client its own blocking XREAD on the events stream.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from redis.asyncio import Redis

REDIS_URL = os.environ.get("REF_REDIS_URL", "redis://127.0.0.1:6379/0")
STREAM = os.environ.get("REF_STREAM", "reference:txns")
EVENT_STREAM = os.environ.get("REF_EVENT_STREAM", "reference:events")


_Reply = list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]]


class Transaction(BaseModel):
    """The seed's transaction model."""

    txn_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    user_id: str = "anonymous"
    amount: float
    currency: str = "INR"
    merchant_type: str = "general"
    source_ip: str
    status: str = "PENDING"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # redis-py's asyncio pool stops at 100 connections by default; every feed client holds
    # one for its blocking XREAD.
    app.state.redis = Redis.from_url(REDIS_URL, max_connections=20_000)
    try:
        yield
    finally:
        await app.state.redis.aclose()


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "alive"}


@app.post("/transactions", status_code=202)
async def submit(txn: Transaction, request: Request) -> dict[str, Any]:
    received_at_ms = time.time_ns() // 1_000_000
    await request.app.state.redis.xadd(
        STREAM, {"data": txn.model_dump_json(), "received_at_ms": received_at_ms}
    )
    return {"txn_id": txn.txn_id, "status": "PENDING"}


@app.get("/events")
async def events(request: Request) -> StreamingResponse:
    redis: Redis = request.app.state.redis

    async def feed() -> AsyncIterator[bytes]:
        last = "$"
        yield b"retry: 3000\n\n"
        while True:
            reply = cast(_Reply, await redis.xread({EVENT_STREAM: last}, count=100, block=1000))
            for _, entries in reply:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    kind = fields.get(b"kind", b"decision").decode()
                    yield f"id: {last}\nevent: {kind}\ndata: ".encode() + fields[b"data"] + b"\n\n"

    return StreamingResponse(feed(), media_type="text/event-stream")
