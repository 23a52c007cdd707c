"""Faults under load, with real processes on loopback: Redis and PostgreSQL restarted under
the api and the workers, workers killed with SIGKILL at random moments.

The servers restarted here are PRIVATE (embedded Valkey / PostgreSQL in temporary
directories): the machine's shared servers are never stopped. Each test repeats its fault
FINTRACK_TEST_LOOPS times (default 3).
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import psutil
import psycopg
import pytest
import redis
from worker_checks import (
    assert_published_once,
    assert_velocity_matches,
    decided,
    pending,
    velocity_rules_file,
)

from conftest import API_KEY, RoleProcess, wait_until
from fintrack.config import Settings
from fintrack.core.db import migrate
from fintrack.core.embedded import EmbeddedPostgres, EmbeddedValkey
from fintrack.core.models import FINAL_STATUSES, Transaction, transaction_decoder
from fintrack.core.streams import TXN_GROUP

LOOPS = int(os.environ.get("FINTRACK_TEST_LOOPS", "3"))
ACME = {"Authorization": f"Bearer {API_KEY}"}
StartRole = Callable[..., RoleProcess]
pytestmark = pytest.mark.slow


@pytest.fixture
def data_root() -> Iterator[Path]:
    """Server data outside pytest's tmp tree (reset to 0700 by concurrent sessions, which
    would lock out the embedded PostgreSQL's unprivileged user)."""
    path = Path(tempfile.mkdtemp(prefix="fintrack-faults-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Answer(NamedTuple):
    txn_id: str
    status: int
    started: float
    ended: float


class Load:
    """Clients submitting transactions (each with its own txn_id) from threads until the
    ``with`` block ends; every answer is recorded with when it was asked and answered."""

    def __init__(self, base_url: str, threads: int = 2) -> None:
        self.answers: list[Answer] = []
        self._base_url = base_url
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self._base_url, timeout=10) as http:
            while not self._stop.is_set():
                txn_id = str(uuid.uuid4())
                body = {"txn_id": txn_id, "amount": 10, "source_ip": "1.2.3.4", "user_id": f"u{n}"}
                started = time.monotonic()
                try:
                    status = http.post("/transactions", json=body, headers=ACME).status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all: never counted as accepted
                self.answers.append(Answer(txn_id, status, started, time.monotonic()))

    def accepted(self, since: float = 0.0) -> set[str]:
        return {a.txn_id for a in list(self.answers) if a.status == 202 and a.started >= since}

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def _decided_ids(database_url: str) -> set[str]:
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute("SELECT txn_id::text, status FROM transactions").fetchall()
    assert {status for _, status in rows} <= set(FINAL_STATUSES)
    return {txn_id for txn_id, _ in rows}


def _reading(client: redis.Redis, s: Settings, consumer: str) -> bool:
    """``consumer`` has joined the workers' group (its first XREADGROUP went out)."""
    try:
        consumers = client.xinfo_consumers(s.txn_stream, TXN_GROUP)
    except redis.ResponseError:
        return False  # no stream or group yet
    return any(c["name"] == consumer.encode() for c in consumers)


def _cpu_seconds(roles: list[RoleProcess]) -> float:
    total = 0.0
    for role in roles:
        times = psutil.Process(role.proc.pid).cpu_times()
        total += times.user + times.system
    return total


def test_redis_restart_during_ingest_and_processing(
    start_role: StartRole, settings: Settings, data_root: Path
) -> None:
    """While Redis is down the api answers 503, never 202, and workers wait without
    spinning; after each clean restart (AOF) everyone recovers by themselves and every
    transaction that got a 202 ends up decided."""
    valkey = EmbeddedValkey(data_root / "valkey")
    valkey.start()
    port = valkey.port
    try:
        s = dataclasses.replace(
            settings, redis_url=valkey.url, worker_claim_idle_ms=1_000, worker_heartbeat_file=""
        )
        api = start_role("api", s)
        workers = [start_role("worker", s, "--consumer", f"r{i}") for i in (1, 2)]
        client = redis.Redis.from_url(s.redis_url)
        try:
            for name in ("r1", "r2"):
                wait_until(lambda c=name: _reading(client, s, c), 30, f"{name} reading")
        finally:
            client.close()
        outages: list[tuple[float, float]] = []
        with Load(api.base_url) as load:
            for _ in range(LOOPS):
                before = time.monotonic()
                wait_until(lambda t=before: len(load.accepted(t)) >= 20, 30, "traffic flowing")
                valkey.stop()
                down = time.monotonic()
                cpu_before = _cpu_seconds(workers)
                wait_until(
                    lambda t=down: (
                        sum(a.started > t for a in list(load.answers)) >= 10
                        and time.monotonic() - t > 1.5
                    ),
                    30,
                    "requests during the outage",
                )
                up = time.monotonic()
                # Backing off, not spinning: well under a tenth of a core per worker.
                assert _cpu_seconds(workers) - cpu_before < 0.1 * (up - down) * len(workers)
                valkey.requested_port = port
                valkey.start()
                outages.append((down, up))
                wait_until(lambda t=up: len(load.accepted(t)) >= 5, 30, "the api to recover")

        assert {a.status for a in load.answers} <= {202, 503}, "only 202 or 503"
        during = [a for a in load.answers for d, u in outages if a.started > d and a.ended < u]
        assert during
        assert {a.status for a in during} == {503}
        accepted = load.accepted()
        wait_until(lambda: accepted <= _decided_ids(s.database_url), 60, "every 202 decided")
        client = redis.Redis.from_url(s.redis_url)
        try:
            wait_until(lambda: pending(client, s) == 0, 30, "nothing left pending")
        finally:
            client.close()
        for role in (api, *workers):
            assert role.proc.poll() is None  # recovered without a restart
        assert all("dependency unavailable" in w.log() for w in workers)
    finally:
        valkey.stop()


def _acked(client: redis.Redis, s: Settings) -> int:
    """Entries of the transactions stream the workers have acknowledged so far."""
    (group,) = [g for g in client.xinfo_groups(s.txn_stream) if g["name"] == TXN_GROUP.encode()]
    return int(group["entries-read"]) - int(group["pending"])


def test_postgresql_restart_during_processing(
    start_role: StartRole, settings: Settings, data_root: Path
) -> None:
    """While PostgreSQL is down nothing is acked (and reads answer 503, submissions still
    202); after each restart the api's and workers' pools recover without a restart and
    every accepted transaction is decided."""
    postgres = EmbeddedPostgres(data_root / "pg")
    postgres.start()
    port = postgres.port
    client = redis.Redis.from_url(settings.redis_url)
    try:
        migrate(postgres.url)
        s = dataclasses.replace(
            settings,
            database_url=postgres.url,
            worker_claim_idle_ms=1_000,
            worker_heartbeat_file="",
        )
        api = start_role("api", s)
        workers = [start_role("worker", s, "--consumer", f"p{i}") for i in (1, 2)]
        for name in ("p1", "p2"):
            wait_until(lambda c=name: _reading(client, s, c), 30, f"{name} reading")
        with httpx.Client(base_url=api.base_url, timeout=10) as http, Load(api.base_url) as load:
            for _ in range(LOOPS):
                before = time.monotonic()
                wait_until(lambda t=before: len(load.accepted(t)) >= 20, 30, "traffic flowing")
                known = next(iter(load.accepted(before)))
                postgres.stop()
                down = time.monotonic()
                # A batch committed just before the stop may still be acked: let it settle.
                wait_until(lambda t=down: time.monotonic() - t > 0.5, 5, "in-flight acks")
                acked = _acked(client, s)
                wait_until(
                    lambda t=down: len(load.accepted(t + 0.5)) >= 10 and time.monotonic() - t > 2.0,
                    30,
                    "submissions during the outage",
                )
                assert _acked(client, s) == acked, "acked while PostgreSQL was down"
                assert http.get(f"/transactions/{known}", headers=ACME).status_code == 503
                postgres.requested_port = port
                postgres.start()
                wait_until(
                    lambda t=known: (
                        http.get(f"/transactions/{t}", headers=ACME).status_code in (200,)
                    ),
                    60,
                    "the api's pool to recover and the worker to decide",
                )
        accepted = load.accepted()
        wait_until(lambda: accepted <= _decided_ids(s.database_url), 60, "every 202 decided")
        wait_until(lambda: pending(client, s) == 0, 30, "nothing left pending")
        for role in (api, *workers):
            assert role.proc.poll() is None  # the pools recovered inside the processes
    finally:
        client.close()
        postgres.stop()


def _stream(client: redis.Redis, s: Settings) -> tuple[list[Transaction], list[str]]:
    """Every accepted transaction, in stream order, with its entry id."""
    entries = client.xrange(s.txn_stream)
    return (
        [transaction_decoder.decode(fields[b"txn"]) for _, fields in entries],
        [entry_id.decode() for entry_id, _ in entries],
    )


def test_worker_sigkill_at_random_points_keeps_the_outcome_invariant(
    start_role: StartRole, settings: Settings, tmp_path: Path
) -> None:
    """A worker killed with SIGKILL at a random moment, again and again while clients keep
    sending (and replaying): after each recovery the rows are exactly the distinct accepted
    txn_ids with one final status each, nothing is pending, every decision was published
    once and every velocity figure equals the ground truth."""
    s = dataclasses.replace(
        settings,
        rules_file=velocity_rules_file(tmp_path),
        worker_batch_size=20,
        worker_heartbeat_file="",
    )
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    api = start_role("api", s)
    client = redis.Redis.from_url(s.redis_url)
    sent: list[dict[str, object]] = []
    accepted: set[str] = set()
    try:
        with httpx.Client(base_url=api.base_url, timeout=10) as http:
            for loop in range(LOOPS):
                consumer = f"victim-{loop % 2}"  # sometimes a name with entries pending
                victim = start_role("worker", s, "--consumer", consumer)
                fresh = [
                    {
                        "txn_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        "user_id": f"user_{rng.randrange(4)}",
                        "amount": rng.randrange(100, 100_000) / 100,
                        "currency": "USD",
                        "source_ip": "198.51.100.7",
                    }
                    for _ in range(300)
                ]
                # Clients retrying earlier submissions verbatim: answered, never enqueued.
                replays = rng.sample(sent, min(10, len(sent)))
                sent += fresh
                wait_until(lambda c=consumer: _reading(client, s, c), 30, f"{consumer} reading")

                def submit(
                    fresh: list[dict[str, object]] = fresh,
                    replays: list[dict[str, object]] = replays,
                ) -> None:
                    for start in range(0, len(fresh), 20):
                        batch = fresh[start : start + 20] + (replays if start == 0 else [])
                        answer = http.post("/transactions/batch", json=batch, headers=ACME)
                        for item in answer.json()["results"]:
                            assert item["status"] in ("accepted", "duplicate"), item
                            if item["status"] == "accepted":
                                accepted.add(item["txn_id"])

                clients = threading.Thread(target=submit)
                clients.start()
                if loop % 2 == 0:
                    # Caught in the act: frozen at a moment it holds a batch, then killed.
                    def holding(c: str = consumer, proc: RoleProcess = victim) -> bool:
                        proc.proc.send_signal(signal.SIGSTOP)
                        if pending(client, s, c):
                            return True
                        proc.proc.send_signal(signal.SIGCONT)
                        return False

                    # Polled every 2 ms, not wait_until's 50: each batch is held for a few
                    # ms only, and under a full test run's load 50 ms polls missed them all.
                    deadline = time.monotonic() + 30
                    while not holding():
                        assert time.monotonic() < deadline, f"{consumer} never held a batch"
                        time.sleep(0.002)
                else:
                    time.sleep(rng.uniform(0.0, 0.5))  # any moment: reading, deciding, idle
                victim.proc.send_signal(signal.SIGKILL)
                assert victim.proc.wait(10) == -signal.SIGKILL
                clients.join(60)
                # A worker restarted under the same name finishes its own pending entries
                # first, then drains the stream.
                rescuer = start_role("worker", s, "--consumer", consumer, "--drain")
                assert rescuer.proc.wait(120) == 0, rescuer.log()
                other = "victim-1" if consumer == "victim-0" else "victim-0"
                if pending(client, s, other):
                    leftover = start_role("worker", s, "--consumer", other, "--drain")
                    assert leftover.proc.wait(120) == 0, leftover.log()

                context = f"loop {loop}, seed {seed}"
                txns, ids = _stream(client, s)
                assert len(ids) == len({str(t.txn_id) for t in txns}), context  # no double
                assert {str(t.txn_id) for t in txns} == accepted, context
                rows = decided(s)
                assert set(rows) == accepted, context
                assert {row.status for row in rows.values()} <= set(FINAL_STATUSES), context
                assert pending(client, s) == 0, context
                assert_published_once(client, s, rows)
                assert_velocity_matches(s, txns, ids)
    finally:
        client.close()
