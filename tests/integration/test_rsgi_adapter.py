"""``fintrack.core.rsgi``: an ASGI app behind a real Granian process on its RSGI interface
(the api is served this way). The app is ``rsgi_apps``; each test starts its own server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port, wait_until

HERE = Path(__file__).parent
Serve = Callable[..., tuple[subprocess.Popen[bytes], str]]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Start ``rsgi_apps:create`` under Granian (RSGI, one worker); stop it afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(*, wait: bool = True, **env: str) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        code = (
            "from fintrack.core.serve import serve; "
            f"serve('rsgi_apps:create', host='127.0.0.1', port={port}, workers=1, "
            "kill_timeout_s=5, rsgi=True)"
        )
        child_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "RSGI_TEST_MARKERS": str(tmp_path),
            **env,
        }
        with (tmp_path / f"granian-{port}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", code], env=child_env, stdout=log, stderr=subprocess.STDOUT
            )
        started.append(proc)
        base_url = f"http://127.0.0.1:{port}"
        if wait:
            wait_until(lambda: _answers(base_url) or proc.poll() is not None, 30, "the server")
            assert proc.poll() is None, (tmp_path / f"granian-{port}.log").read_text()
        return proc, base_url

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _answers(base_url: str) -> bool:
    try:
        httpx.get(f"{base_url}/echo", timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_the_app_sees_the_request_as_asgi_and_its_answer_goes_out_whole(serve: Serve) -> None:
    _, base_url = serve()
    answer = httpx.post(
        f"{base_url}/a%20b/echo/../echo?x=1&y=%20",
        content=b'{"amount": 1}',
        headers=[("X-Twice", "1"), ("X-Twice", "2")],
    )
    assert answer.status_code == 201
    assert answer.headers["x-seen"] == "1"
    assert answer.headers["content-type"] == "application/json"
    seen = answer.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/a b/echo"  # decoded and normalised, as Granian's ASGI does
    assert seen["raw_path"] == "/a%20b/echo"
    assert seen["query_string"] == "x=1&y=%20"
    assert [h for h in seen["headers"] if h[0] == "x-twice"] == [["x-twice", "1"], ["x-twice", "2"]]
    assert seen["client"] == "127.0.0.1"
    assert seen["server_port"] == int(base_url.rsplit(":", 1)[1])
    # A body with a Content-Length within the limit arrives in one message.
    assert seen["body"] == '{"amount": 1}'
    assert seen["body_messages"] == 1
    assert seen["state"] == "hello"  # what the lifespan put in its state


def test_a_body_without_length_or_over_the_limit_arrives_in_parts(serve: Serve) -> None:
    """So the app's own limit can refuse it before it is all read."""
    _, base_url = serve()

    def chunks() -> Iterator[bytes]:
        yield b"x" * 40
        yield b"y" * 40

    chunked = httpx.post(f"{base_url}/echo", content=chunks()).json()
    assert chunked["body"] == "x" * 40 + "y" * 40
    assert chunked["body_messages"] >= 2  # the parts, then the end
    long = httpx.post(f"{base_url}/echo", content=b"z" * 100).json()
    assert long["body"] == "z" * 100
    assert long["body_messages"] >= 2


def test_a_shortcut_answers_the_requests_it_claims_without_the_app(serve: Serve) -> None:
    _, base_url = serve()
    answer = httpx.post(f"{base_url}/short", content=b"answer me", headers={"X-Test": "t1"})
    assert answer.status_code == 200
    assert answer.text == "answered: answer me"
    assert answer.headers["x-shortcut"] == "t1"
    assert answer.headers["content-length"] == str(len("answered: answer me"))
    assert "x-seen" not in answer.headers  # the app never saw it


def test_a_request_the_shortcut_declines_reaches_the_app_with_its_body(serve: Serve) -> None:
    """The shortcut has read the body already: the app gets it whole, in one message."""
    _, base_url = serve()
    seen = httpx.post(f"{base_url}/short", content=b"not me", headers={"X-Test": "t2"}).json()
    assert seen["path"] == "/short"
    assert seen["body"] == "not me"
    assert seen["body_messages"] == 1
    assert ["x-test", "t2"] in seen["headers"]
    # Other methods and paths are not offered to it at all.
    assert httpx.put(f"{base_url}/short", content=b"answer me").json()["body"] == "answer me"
    assert httpx.post(f"{base_url}/echo", content=b"answer me").json()["body"] == "answer me"


def test_a_body_without_length_or_over_the_limit_is_not_offered_to_the_shortcut(
    serve: Serve,
) -> None:
    """Only a whole body within the limit is read before the app could refuse it."""
    _, base_url = serve()
    chunked = httpx.post(f"{base_url}/short", content=iter([b"answer", b" me"]))
    assert chunked.json()["body"] == "answer me"  # the app's echo, in parts
    assert chunked.json()["body_messages"] >= 2
    padded = b"answer me" + b" " * 100  # over MAX_BODY: the app reads it in parts
    long = httpx.post(f"{base_url}/short", content=padded).json()
    assert long["body"] == padded.decode()
    assert long["body_messages"] >= 2


def test_a_body_sent_in_parts_is_streamed(serve: Serve) -> None:
    """And once it is complete, receive() reports it (as http.disconnect, as ASGI servers
    do): Litestar's streaming responses wait for that before they end."""
    _, base_url = serve()
    answer = httpx.get(f"{base_url}/parts", timeout=10)
    assert answer.status_code == 200
    assert answer.text == "one,two,three"
    assert answer.headers.get("transfer-encoding") == "chunked"


def test_an_app_that_never_answers_gives_500(serve: Serve) -> None:
    _, base_url = serve()
    assert httpx.get(f"{base_url}/silent").status_code == 500
    assert httpx.get(f"{base_url}/echo").status_code == 201  # the server goes on


def test_a_client_that_leaves_is_reported_as_a_disconnect(serve: Serve, tmp_path: Path) -> None:
    _, base_url = serve()
    port = int(base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        # Leave only once the app has the request: a client gone before the server read
        # it may never reach the app at all (Granian then drops it, as it should).
        wait_until((tmp_path / "waiting").exists, 10, "the app to get the request")
    marker = tmp_path / "disconnect"
    wait_until(marker.exists, 10, "the app to see the disconnect")
    assert marker.read_text() == "http.disconnect"


def test_the_lifespan_shuts_down_with_the_server(serve: Serve, tmp_path: Path) -> None:
    proc, _ = serve()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    assert (tmp_path / "shutdown").read_text() == "done"


def test_a_failed_startup_serves_nothing(serve: Serve, tmp_path: Path) -> None:
    proc, base_url = serve(wait=False, RSGI_TEST_FAIL="1")
    wait_until(lambda: proc.poll() is not None, 30, "the server to give up")
    assert proc.returncode != 0
    assert not _answers(base_url)
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("granian-*.log"))
    assert "no database" in logs
