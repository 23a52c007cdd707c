"""A small ASGI app served through ``fintrack.core.rsgi`` by a real Granian process
(``test_rsgi_adapter``): it shows what the adapter hands an app and does with its answers.

Paths: ``/echo`` (and any other) answers what the app saw (scope, body, the lifespan's
state); ``POST /short`` is claimed by the shortcut, which answers a body that starts with
``answer me`` itself and declines any other;
``/parts`` answers in three parts (and, as Litestar does, waits for receive() to
report the end); ``/silent`` never answers; ``/disconnect`` leaves a marker file once it
waits for the client to go, and another when it has gone. The lifespan fails when
RSGI_TEST_FAIL is set, and leaves a marker file on shutdown. Markers go to
RSGI_TEST_MARKERS.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from fintrack.core.rsgi import Answer, Headers, RSGIAdapter

MAX_BODY = 64


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    path = scope["path"]
    if path == "/silent":
        return
    messages = [await receive()]
    while messages[-1].get("more_body"):
        messages.append(await receive())
    if path == "/disconnect":
        markers = Path(os.environ["RSGI_TEST_MARKERS"])
        (markers / "waiting").write_text("")  # the client leaves once it sees this
        message = await receive()
        (markers / "disconnect").write_text(message["type"])
        return
    if path == "/parts":
        # As Litestar streams: the parts go out from a task while the request's own task
        # waits on receive() for a disconnect, and ends only when it returns.
        sending = asyncio.create_task(_send_parts(send))
        assert (await receive())["type"] == "http.disconnect"
        await sending
        return
    seen = {
        "method": scope["method"],
        "path": path,
        "raw_path": scope["raw_path"].decode(),
        "query_string": scope["query_string"].decode(),
        "headers": [[n.decode(), v.decode()] for n, v in scope["headers"]],
        "client": scope["client"][0],
        "server_port": scope["server"][1],
        "body": b"".join(m["body"] for m in messages).decode(),
        "body_messages": len(messages),
        "state": scope["state"].get("greeting"),
    }
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json"), (b"x-seen", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps(seen).encode()})


async def _send_parts(send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"one,", b"two,", b"three"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await receive()  # lifespan.startup
    if os.environ.get("RSGI_TEST_FAIL"):
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    scope["state"]["greeting"] = "hello"
    await send({"type": "lifespan.startup.complete"})
    await receive()  # lifespan.shutdown
    Path(os.environ["RSGI_TEST_MARKERS"], "shutdown").write_text("done")
    await send({"type": "lifespan.shutdown.complete"})


class _Shortcut:
    def claims(self, method: str, path: str) -> bool:
        return method == "POST" and path == "/short"

    async def answer(self, path: str, headers: Headers, body: bytes) -> Answer | None:
        if not body.startswith(b"answer me"):
            return None
        return 200, [("x-shortcut", headers.get("x-test") or "")], b"answered: " + body


def create() -> RSGIAdapter:
    return RSGIAdapter(app, max_body_bytes=MAX_BODY, shortcut=_Shortcut())
