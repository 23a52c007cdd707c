"""What worker tests look at: decisions in PostgreSQL, events and pending entries in Redis,
and velocity figures recomputed from the generated data (the ground truth)."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import psycopg
import redis
from enqueue import enqueue

from fintrack.config import Settings
from fintrack.core.activity import entry_score, window_start
from fintrack.core.events import SecurityEvent
from fintrack.core.models import Transaction
from fintrack.core.streams import TXN_GROUP

# Velocity windows of the test rules: every window fires for every transaction whose
# figures exceed 1 transaction / USD 0.01, so each reason carries the numbers to check.
WINDOWS = (1, 3600)
VELOCITY_RULES = """
flag_threshold = 50
block_threshold = 100

[[velocity.windows]]
window_s = 1
max_count = 1
count_score = 1
max_amount = "0.01"
amount_score = 1

[[velocity.windows]]
window_s = 3600
max_count = 1
count_score = 1
max_amount = "0.01"
amount_score = 1
"""


def velocity_rules_file(tmp_path: Path) -> str:
    path = tmp_path / "rules.toml"
    path.write_text(VELOCITY_RULES)
    return str(path)


class Row(NamedTuple):
    status: str
    risk_score: int
    decided_at: Any
    failure_reason: str | None


def decided(settings: Settings) -> dict[str, Row]:
    """Every transaction row: {txn_id: Row}."""
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT txn_id::text, status, risk_score, decided_at, failure_reason FROM transactions"
        ).fetchall()
    return {r[0]: Row(r[1], r[2], r[3], r[4]) for r in rows}


def count_decided(settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute("SELECT count(*) FROM transactions").fetchone()
    assert row is not None
    return int(row[0])


def rule_hits(settings: Settings) -> dict[str, dict[str, str]]:
    """{txn_id: {rule: reason}}."""
    result: dict[str, dict[str, str]] = {}
    with psycopg.connect(settings.database_url) as conn:
        for txn_id, rule, reason in conn.execute(
            "SELECT txn_id::text, rule, reason FROM rule_hits"
        ).fetchall():
            result.setdefault(txn_id, {})[rule] = reason
    return result


def events(client: redis.Redis, settings: Settings) -> list[tuple[str, SecurityEvent, bytes]]:
    """Every entry of the events stream: (entry id, decoded event, exact data bytes)."""
    decoder = msgspec.json.Decoder(SecurityEvent)
    return [
        (entry_id.decode(), decoder.decode(fields[b"data"]), fields[b"data"])
        for entry_id, fields in client.xrange(settings.event_stream)
    ]


def event_counts(client: redis.Redis, settings: Settings) -> Counter[tuple[str, str]]:
    """How many times each (txn_id, kind) was published."""
    return Counter((e.txn_id, e.kind) for _, e, _ in events(client, settings))


def pending(client: redis.Redis, settings: Settings, consumer: str | None = None) -> int:
    """Entries of the transactions stream delivered but not acked (for one consumer)."""
    if not client.exists(settings.txn_stream) or not client.xinfo_groups(settings.txn_stream):
        return 0  # no worker has created the group yet
    if consumer is None:
        summary = client.xpending(settings.txn_stream, TXN_GROUP)
        return int(summary["pending"])
    rows = client.xpending_range(
        settings.txn_stream, TXN_GROUP, "-", "+", 1_000_000, consumername=consumer
    )
    return len(rows)


def assert_published_once(client: redis.Redis, settings: Settings, rows: dict[str, Row]) -> None:
    """One decision event per decided transaction, one alert per risky one, nothing else."""
    counts = event_counts(client, settings)
    expected: Counter[tuple[str, str]] = Counter()
    for txn_id, row in rows.items():
        expected[(txn_id, "decision")] = 1
        if row.status != "APPROVED":
            expected[(txn_id, "alert")] = 1
    assert counts == expected, f"published {dict(counts)}, expected {dict(expected)}"


class Figures(NamedTuple):
    count: int
    amount: Decimal


def ground_truth(txns: Sequence[Transaction], ids: Sequence[str]) -> dict[str, dict[int, Figures]]:
    """For every transaction, its user's count and USD total in each window of
    ``WINDOWS`` ending at (and including) it, from the generated data alone."""
    by_user: dict[str, list[tuple[int, Decimal]]] = {}
    for txn, entry_id in zip(txns, ids, strict=True):
        by_user.setdefault(txn.user_id, []).append((entry_score(entry_id), txn.amount))
    truth: dict[str, dict[int, Figures]] = {}
    for txn, entry_id in zip(txns, ids, strict=True):
        score = entry_score(entry_id)
        figures: dict[int, Figures] = {}
        for w in WINDOWS:
            lower = window_start(score, w)
            inside = [a for s, a in by_user[txn.user_id] if lower < s <= score]
            figures[w] = Figures(len(inside), sum(inside, Decimal(0)))
        truth[str(txn.txn_id)] = figures
    return truth


_COUNT = re.compile(r"(\d+) transactions? in (\d+ s|\d+ min|\d+ h), limit")
_AMOUNT = re.compile(r"USD ([\d,]+\.\d\d) in (\d+ s|\d+ min|\d+ h), limit")
_WINDOW_TEXT = {"1 s": 1, "1 h": 3600}


def recorded_figures(hits: dict[str, str]) -> dict[int, Figures]:
    """The velocity figures a decision recorded in its reasons (count 1 leaves no hit)."""
    counts = dict.fromkeys(WINDOWS, 1)
    amounts: dict[int, Decimal] = {}
    for n, window in _COUNT.findall(hits.get("velocity_count", "")):
        counts[_WINDOW_TEXT[window]] = int(n)
    for amount, window in _AMOUNT.findall(hits.get("velocity_amount", "")):
        amounts[_WINDOW_TEXT[window]] = Decimal(amount.replace(",", ""))
    return {w: Figures(counts[w], amounts.get(w, Decimal(-1))) for w in WINDOWS}


def assert_velocity_matches(
    settings: Settings, txns: Sequence[Transaction], ids: Sequence[str]
) -> None:
    """Every transaction's recorded velocity figures equal the ground truth."""
    truth = ground_truth(txns, ids)
    hits = rule_hits(settings)
    wrong = {
        txn_id: (recorded_figures(hits.get(txn_id, {})), expected)
        for txn_id, expected in truth.items()
        if recorded_figures(hits.get(txn_id, {})) != expected
    }
    assert not wrong, f"{len(wrong)} of {len(truth)} differ, e.g. {next(iter(wrong.items()))}"


def usd_traffic(n: int, users: int, seed: int) -> list[Transaction]:
    """``n`` ordinary USD transactions spread over ``users`` users, reproducibly."""
    import random
    import uuid

    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    return [
        Transaction(
            txn_id=uuid.UUID(int=rng.getrandbits(128), version=4),
            user_id=f"user_{rng.randrange(users)}",
            amount=Decimal(rng.randrange(100, 100_000)) / 100,
            currency="USD",
            merchant_type=rng.choice(("general", "grocery", "travel", "crypto")),
            source_ip=f"198.51.100.{rng.randrange(1, 255)}",
            client_id="acme",
            received_at_ms=now_ms,
        )
        for _ in range(n)
    ]


def paced_enqueue(
    client: redis.Redis, settings: Settings, txns: Sequence[Transaction], *, chunk: int = 100
) -> list[str]:
    """Enqueue in small chunks with short pauses: traffic arriving over a few seconds, so
    velocity windows see varied figures and workers run under load meanwhile."""
    ids: list[str] = []
    for start in range(0, len(txns), chunk):
        ids += enqueue(client, settings, txns[start : start + chunk])
        time.sleep(0.02)  # pacing the traffic, not waiting for a result
    return ids
