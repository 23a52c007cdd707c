"""``fintrack run all`` as a user runs it: real processes, embedded servers, the seed's curl,
the live feed, Ctrl-C without orphans, a restart on the same data, and simulated traffic."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from conftest import free_port, wait_until
from fintrack.config import hash_secret
from fintrack.simulate import DEFAULT_BLOCKED_NETWORKS

# The seed README's quick-start, character for character (only the port is substituted).
SEED_CURL = (
    "curl -X POST http://localhost:8001/transactions "
    """-d '{"amount": 200000, "source_ip": "12.34.56.78"}'"""
)
START_TIMEOUT_S = 90.0  # initdb of a fresh cluster on a busy 2-core machine
STOP_WITHIN_S = 10.0
DECISION_WITHIN_S = 2.0
FINAL = {"APPROVED", "FLAGGED", "BLOCKED", "FAILED"}
LOOPS = int(os.environ.get("FINTRACK_TEST_LOOPS", "10"))


@dataclass
class LocalRun:
    """A ``python -m fintrack run all`` process and its listeners."""

    proc: subprocess.Popen[bytes]
    api: str
    notifier: str
    log_path: Path
    healthy_after_s: float = 0.0
    family: list[psutil.Process] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _clean_env(**extra: str) -> dict[str, str]:
    # No FINTRACK_* service URLs (or anything else of ours): `run all` must bring its own.
    return {**{k: v for k, v in os.environ.items() if not k.startswith("FINTRACK_")}, **extra}


def _env(data_dir: Path, api_port: int, notifier_port: int, **extra: str) -> dict[str, str]:
    return _clean_env(
        FINTRACK_DATA_DIR=str(data_dir),
        FINTRACK_API_PORT=str(api_port),
        FINTRACK_NOTIFIER_PORT=str(notifier_port),
        **extra,
    )


def _spawn(tmp_path: Path, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    with (tmp_path / log_name).open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "fintrack", "run", "all"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A directory for `run all` data outside pytest's tmp tree.

    The embedded PostgreSQL runs as an unprivileged user (we are root here) and needs
    o+x on every parent; each pytest session resets ``/tmp/pytest-of-<user>`` to 0700,
    so a concurrent session would lock a server out of a data dir kept below it.
    """
    path = Path(tempfile.mkdtemp(prefix="fintrack-e2e-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def run_all(tmp_path: Path) -> Iterator[Callable[..., LocalRun]]:
    """Start ``run all`` on a data dir and ports; whatever is left is killed at the end."""
    started: list[LocalRun] = []

    def start(data_dir: Path, api_port: int, notifier_port: int, **env: str) -> LocalRun:
        log_name = f"run-all-{len(started)}.log"
        begin = time.monotonic()
        proc = _spawn(tmp_path, _env(data_dir, api_port, notifier_port, **env), log_name)
        run = LocalRun(
            proc, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{notifier_port}",
            tmp_path / log_name,
        )  # fmt: skip
        started.append(run)

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"run all exited with {proc.returncode}:\n{run.log()}")
            try:
                return (
                    all(
                        httpx.get(f"{base}/health", timeout=1).status_code == 200
                        for base in (run.api, run.notifier)
                    )
                    and "FinTrack-Sentinel is running" in run.log()
                )
            except httpx.HTTPError:
                return False

        wait_until(healthy, START_TIMEOUT_S, "run all to become healthy")
        run.healthy_after_s = time.monotonic() - begin
        print(f"run all healthy after {run.healthy_after_s:.2f} s")
        return run

    yield start
    for run in started:
        # A test that failed half-way: stop gracefully if possible, then kill what is left.
        if run.proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                run.family += psutil.Process(run.proc.pid).children(recursive=True)
            run.proc.send_signal(signal.SIGINT)
            try:
                run.proc.wait(STOP_WITHIN_S)
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait(10)
        for p in run.family:
            if _alive(p):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()


def interrupt_and_check_no_orphans(run: LocalRun) -> None:
    """SIGINT, then the process and every descendant must be gone within STOP_WITHIN_S."""
    root = psutil.Process(run.proc.pid)
    run.family = [root, *root.children(recursive=True)]
    names = set()
    for p in run.family:
        with contextlib.suppress(psutil.NoSuchProcess):
            names.add(p.name())
    # The collection is meaningful: the servers and the roles are in it.
    assert {"valkey-server", "postgres"} <= names, names
    assert len(run.family) >= 8, names  # run all, 2 servers, api, 2 workers, notifier, ...
    begin = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    try:
        run.proc.wait(STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"run all still running {STOP_WITHIN_S} s after SIGINT:\n{run.log()}")
    wait_until(
        lambda: not any(_alive(p) for p in run.family),
        max(0.1, STOP_WITHIN_S - (time.monotonic() - begin)),
        "every child of run all to exit",
    )
    assert run.proc.returncode == 0, run.log()
    print(f"run all stopped in {time.monotonic() - begin:.2f} s")


def curl_seed(api_port: int, curl_home: Path) -> tuple[int, dict[str, object], float]:
    """Run the seed's curl verbatim; returns (HTTP status, JSON body, monotonic end time)."""
    # curl reads $CURL_HOME/.curlrc: it only adds the status line after the body, so the
    # command itself stays exactly the seed's (and no user curlrc can change it).
    curl_home.mkdir(exist_ok=True)
    (curl_home / ".curlrc").write_text('write-out = "\\n%{http_code}"\n')
    argv = shlex.split(SEED_CURL.replace(":8001/", f":{api_port}/"))
    env = {**os.environ, "CURL_HOME": str(curl_home)}
    done = subprocess.run(argv, capture_output=True, env=env, timeout=10, check=False)
    answered = time.monotonic()
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.decode().rpartition("\n")
    return int(status), json.loads(body), answered


def read_decision_event(events: httpx.Response, txn_id: str, deadline: float) -> dict[str, object]:
    """The ``decision`` SSE event for ``txn_id``, read before ``deadline`` (monotonic)."""
    fields: dict[str, str] = {}
    for line in events.iter_lines():
        if time.monotonic() > deadline:
            break
        if line:
            name, _, value = line.partition(":")
            if name:  # a line starting with ":" is a comment (heartbeat)
                fields[name] = fields.get(name, "") + value.removeprefix(" ")
            continue
        if fields.get("event") == "decision" and "data" in fields:
            data: dict[str, object] = json.loads(fields["data"])
            if data.get("txn_id") == txn_id:
                return data
        fields = {}
    pytest.fail(f"no decision event for {txn_id} within {DECISION_WITHIN_S} s of the 202")


def test_quickstart_decides_streams_stops_cleanly_and_restarts(
    tmp_path: Path, data_root: Path, run_all: Callable[..., LocalRun]
) -> None:
    """The seed's curl gets 202; the decision shows on GET and on the SSE feed within 2 s;
    SIGINT leaves no process behind; a restart on the same data dir still has the txn."""
    data_dir = data_root / "data"
    api_port, notifier_port = free_port(), free_port()
    run = run_all(data_dir, api_port, notifier_port)

    with (
        httpx.Client(timeout=httpx.Timeout(5.0, read=DECISION_WITHIN_S)) as client,
        client.stream("GET", f"{run.notifier}/events") as events,  # open mode: no auth
    ):
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        status, body, answered = curl_seed(api_port, tmp_path / "curl")
        assert status == 202, body
        assert body["status"] == "PENDING"
        txn_id = str(body["txn_id"])
        deadline = answered + DECISION_WITHIN_S

        event = read_decision_event(events, txn_id, deadline)
        assert event["status"] in ("FLAGGED", "BLOCKED")  # 200,000 INR is high value

        decided: dict[str, object] = {}

        def decided_on_get() -> bool:
            answer = client.get(f"{run.api}/transactions/{txn_id}")
            assert answer.status_code == 200, answer.text
            decided.update(answer.json())
            return decided["status"] in FINAL

        wait_until(decided_on_get, max(0.05, deadline - time.monotonic()), "decision on GET")
        assert decided["status"] == event["status"]

    interrupt_and_check_no_orphans(run)

    # Same data dir, same ports (a quick restart must not trip over the last run's sockets).
    again = run_all(data_dir, api_port, notifier_port)
    answer = httpx.get(f"{again.api}/transactions/{txn_id}", timeout=5)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == decided["status"]
    interrupt_and_check_no_orphans(again)


def test_simulated_traffic_is_all_decided_and_fraud_is_caught(
    tmp_path: Path, data_root: Path, run_all: Callable[..., LocalRun]
) -> None:
    """`fintrack simulate --rate 200` against `run all`: every accepted transaction is
    decided and each fraud pattern is caught at least once."""
    duration = 5 if LOOPS <= 3 else 10
    run = run_all(data_root / "data", free_port(), free_port())
    env = _clean_env()
    argv = [
        sys.executable, "-m", "fintrack", "simulate", "--url", run.api, "--rate", "200",
        "--duration", str(duration), "--seed", "1", "--json",
    ]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, env=env, timeout=duration + 60, check=False, cwd=tmp_path
    )
    assert done.stdout, done.stderr.decode()
    summary = json.loads(done.stdout)
    print(json.dumps(summary, indent=1))
    assert done.returncode == 0, (summary, done.stderr.decode())
    assert summary["sent"] == 200 * duration
    assert summary["accepted"] == summary["sent"], summary
    assert summary["undecided"] == 0
    assert not summary["warnings"]
    for pattern in ("blocklisted_ip", "velocity_burst", "high_value_luxury"):
        counts = summary["patterns"][pattern]
        assert counts["sent"] > 0, pattern
        assert counts["caught"] > 0, (pattern, counts)
    interrupt_and_check_no_orphans(run)


def simulate(api: str, cwd: Path, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
    """Run ``fintrack simulate --json`` against ``api``; (exit code, parsed summary)."""
    argv = [sys.executable, "-m", "fintrack", "simulate", "--url", api, "--json", *args]
    done = subprocess.run(
        argv, capture_output=True, env=_clean_env(**env), timeout=60, check=False, cwd=cwd
    )
    assert done.stdout, done.stderr.decode()
    summary: dict[str, Any] = json.loads(done.stdout)
    return done.returncode, summary


def test_simulate_with_auth_needs_the_keys_it_is_given(
    tmp_path: Path, data_root: Path, run_all: Callable[..., LocalRun]
) -> None:
    """With auth on, simulate sends with FINTRACK_SIMULATE_API_KEY; without an admin token
    it warns that it could not block its attackers' networks, with one it blocks them."""
    api_key, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    run = run_all(
        data_root / "data", free_port(), free_port(),
        FINTRACK_API_KEYS=f"sim={hash_secret(api_key)}",
        FINTRACK_ADMIN_TOKENS=f"ops={hash_secret(admin_token)}",
    )  # fmt: skip
    admin = {"authorization": f"Bearer {admin_token}"}
    small = ("--rate", "400", "--count", "400")

    code, summary = simulate(run.api, tmp_path, "--count", "20")
    assert code == 1  # nothing accepted: every POST was refused
    assert summary["rejected"] == {"401": 20}

    code, summary = simulate(
        run.api, tmp_path, *small, "--seed", "3", FINTRACK_SIMULATE_API_KEY=api_key
    )
    assert code == 0, summary
    assert summary["accepted"] == 400
    assert summary["undecided"] == 0
    assert any("--admin-token" in w for w in summary["warnings"]), summary["warnings"]
    assert httpx.get(f"{run.api}/admin/blocklist", headers=admin, timeout=5).json() == []

    code, summary = simulate(
        run.api, tmp_path, *small, "--seed", "4",
        FINTRACK_SIMULATE_API_KEY=api_key, FINTRACK_SIMULATE_ADMIN_TOKEN=admin_token,
    )  # fmt: skip
    assert code == 0, summary
    assert not summary["warnings"]
    blocked = httpx.get(f"{run.api}/admin/blocklist", headers=admin, timeout=5).json()
    assert {entry["network"] for entry in blocked} == set(DEFAULT_BLOCKED_NETWORKS)
    assert summary["patterns"]["blocklisted_ip"]["caught"] > 0
    interrupt_and_check_no_orphans(run)


@pytest.mark.parametrize("busy", ["api", "notifier"])
def test_port_in_use_fails_fast_naming_the_port(tmp_path: Path, data_root: Path, busy: str) -> None:
    """A listener already on the api or notifier port: run all exits non-zero at once,
    names the port, and leaves no server running on its data dir."""
    data_dir = data_root / "data"
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        ports = {"api": free_port(), "notifier": free_port(), busy: taken}
        begin = time.monotonic()
        proc = _spawn(tmp_path, _env(data_dir, ports["api"], ports["notifier"]), "busy.log")
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            pytest.fail("run all kept running although its port was taken")
        elapsed = time.monotonic() - begin
    output = (tmp_path / "busy.log").read_text(errors="replace")
    assert proc.returncode != 0
    assert str(taken) in output, output
    assert "in use" in output
    assert elapsed < 10, elapsed
    strays = [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(str(data_dir) in part for part in p.info["cmdline"] or ())
    ]
    assert not strays
