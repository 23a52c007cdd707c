"""The simulator's pure parts: the seeded traffic generator, the summary, the schedule."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from fintrack._simulate_sender import Outcome, SendResult, await_decisions, send_open_loop
from fintrack._simulate_summary import summarize
from fintrack.core.models import Defaults, request_decoder, validate_request
from fintrack.fraud.settings import DEFAULT_HIGH_VALUE, RuleSettings, to_base
from fintrack.simulate import (
    DEFAULT_BLOCKED_NETWORKS,
    FRAUD_PATTERNS,
    SimulatedTxn,
    SimulationOptions,
    TrafficProfile,
    generate,
    render_text,
    total_transactions,
)

SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def take(n: int, seed: int, **profile: Any) -> list[SimulatedTxn]:
    return list(itertools.islice(generate(TrafficProfile(**profile), seed), n))


def test_same_seed_same_transactions() -> None:
    """Two generators with the same seed yield identical transactions, txn_ids included."""
    first, second = take(3000, seed=42), take(3000, seed=42)
    assert [(t.txn_id, t.pattern, t.incident, t.body) for t in first] == [
        (t.txn_id, t.pattern, t.incident, t.body) for t in second
    ]
    assert len({t.txn_id for t in first}) == len(first)


def test_different_seed_different_transactions() -> None:
    """Another seed gives other ids, other users and another sequence."""
    a, b = take(200, seed=1), take(200, seed=2)
    assert not {t.txn_id for t in a} & {t.txn_id for t in b}
    users_a = {json.loads(t.body)["user_id"] for t in a}
    users_b = {json.loads(t.body)["user_id"] for t in b}
    assert not users_a & users_b


@pytest.mark.parametrize("share", [0.0, 0.05, 0.1, 0.3, 1.0])
def test_fraud_share_is_respected(share: float) -> None:
    """The share of fraud transactions, and each pattern's third of it, match the profile."""
    n = 20_000
    counts = Counter(t.pattern for t in take(n, seed=7, fraud_share=share))
    fraud = sum(counts[p] for p in FRAUD_PATTERNS)
    assert abs(fraud / n - share) <= 0.02
    for pattern in FRAUD_PATTERNS:
        assert abs(counts[pattern] / n - share / 3) <= 0.015 + share * 0.1, (pattern, counts)
    if share == 0.0:
        assert fraud == 0
    if share == 1.0:
        assert counts["normal"] == 0


def test_every_body_is_a_valid_transaction() -> None:
    """Each body decodes with the api's decoder and passes validation unchanged."""
    defaults = Defaults()
    currencies = Counter[str]()
    for txn in take(5000, seed=3, fraud_share=0.3):
        request = request_decoder.decode(txn.body)
        valid = validate_request(request, client_id="sim", received_at_ms=0, defaults=defaults)
        raw = json.loads(txn.body, parse_float=Decimal, parse_int=Decimal)
        assert valid.txn_id == txn.txn_id == uuid.UUID(raw["txn_id"])
        assert valid.amount == raw["amount"]  # already exact in the currency's decimals
        assert valid.source_ip == raw["source_ip"]  # already canonical
        assert {"user_id", "currency", "merchant_type", "status"} <= raw.keys()
        currencies[valid.currency] += 1
    assert {"INR", "USD", "EUR", "GBP", "JPY"} <= currencies.keys()


def test_patterns_look_like_what_they_claim() -> None:
    """Blocklisted IPs fall in the blocked networks (and only they do), bursts are 10-15
    consecutive purchases of one user adding up past the default velocity amount limit,
    luxury purchases exceed the default high-value thresholds."""
    blocked = [ipaddress.ip_network(n) for n in DEFAULT_BLOCKED_NETWORKS]
    rules = RuleSettings()
    bursts: dict[int, list[dict[str, Any]]] = {}
    for txn in take(10_000, seed=11, fraud_share=0.3):
        body = json.loads(txn.body, parse_float=Decimal, parse_int=Decimal)
        ip = ipaddress.ip_address(body["source_ip"])
        in_blocked = any(ip in net for net in blocked)
        assert in_blocked == (txn.pattern == "blocklisted_ip"), body
        assert ip.is_global or in_blocked
        if txn.pattern == "velocity_burst":
            bursts.setdefault(txn.incident, []).append({"index": txn.index, **body})
        if txn.pattern == "high_value_luxury":
            assert body["merchant_type"] == "luxury_goods"
            limit = DEFAULT_HIGH_VALUE.get(body["currency"])
            if limit is not None:
                assert body["amount"] > limit
            assert to_base(body["amount"], body["currency"], rules) > 10_000
        if txn.pattern == "normal":
            assert to_base(body["amount"], body["currency"], rules) < 1_000
    assert bursts
    for burst in bursts.values():
        assert 10 <= len(burst) <= 15
        assert [b["index"] for b in burst] == list(range(burst[0]["index"], burst[-1]["index"] + 1))
        assert len({b["user_id"] for b in burst}) == 1
        assert len({b["source_ip"] for b in burst}) == 1
        # Each stays below its high-value threshold; together they pass the default 60 s
        # velocity amount limit (5,000 USD), so the default rules catch every burst.
        for b in burst:
            assert b["amount"] < DEFAULT_HIGH_VALUE.get(b["currency"], Decimal("inf"))
            assert to_base(b["amount"], b["currency"], rules) < 10_000
        assert sum(to_base(b["amount"], b["currency"], rules) for b in burst) > 5_000


def test_profile_and_options_refuse_nonsense() -> None:
    """Bad profile or options fail at construction, naming the field."""
    with pytest.raises(ValueError, match="fraud_share"):
        TrafficProfile(fraud_share=1.5)
    with pytest.raises(ValueError, match="users"):
        TrafficProfile(users=0)
    with pytest.raises(ValueError, match="host bits set"):
        TrafficProfile(blocked_networks=("203.0.113.7/24",))
    with pytest.raises(ValueError, match="rate"):
        SimulationOptions(url="http://x", total=1, rate=0, seed=1)
    options = SimulationOptions(url="http://x", total=1, rate=1, seed=1, api_key="s3cret")
    assert "s3cret" not in repr(options)


def test_total_transactions() -> None:
    """--count, --duration × rate, the smaller of both, or 10 s by default."""
    assert total_transactions(200, None, None) == 2000
    assert total_transactions(200, 5, None) == 1000
    assert total_transactions(200, None, 17) == 17
    assert total_transactions(200, 5, 5000) == 1000
    assert total_transactions(0.5, 3, None) == 2


def test_summary_counts_latency_and_caught() -> None:
    """The summary splits outcomes by status code, error and decision, and counts a burst
    as one caught incident when any of its transactions was caught."""
    txns = take(400, seed=5, fraud_share=0.5)
    outcomes = []
    for i, _ in enumerate(txns):
        if i == 0:
            outcomes.append(Outcome(status_code=None, error="ConnectError", latency_ms=1.0))
        elif i == 1:
            outcomes.append(Outcome(status_code=503, error=None, latency_ms=2.0))
        else:
            outcomes.append(Outcome(status_code=202, error=None, latency_ms=float(i)))
    statuses = {t.txn_id: ("APPROVED" if t.pattern == "normal" else "FLAGGED") for t in txns[2:-1]}
    burst = next(t for t in txns[2:-1] if t.pattern == "velocity_burst")
    statuses.update({t.txn_id: "APPROVED" for t in txns if t.incident == burst.incident})
    statuses[burst.txn_id] = "BLOCKED"
    result = SendResult(txns=txns, outcomes=outcomes, elapsed_s=2.0)
    summary = summarize(url="u", seed=5, rate=200, result=result, statuses=statuses, settle_s=0.1)

    assert (summary.sent, summary.accepted, summary.undecided) == (400, 398, 1)
    assert summary.failed == {"ConnectError": 1}
    assert summary.rejected == {"503": 1}
    assert sum(summary.decided.values()) == 397
    assert summary.observed_rate == 200.0
    assert summary.latency_ms is not None
    assert summary.latency_ms.p50 == 199.0  # nearest rank: the 200th of 400
    assert summary.latency_ms.max == 399.0
    bursts = summary.patterns["velocity_burst"]
    assert bursts.incidents_caught == bursts.incidents  # the one BLOCKED txn counts
    assert bursts.caught < bursts.sent
    assert summary.patterns["normal"].caught == 0
    assert not summary.ok
    assert "velocity_burst" in render_text(summary)


def _app(
    handle: Callable[[str, str], Awaitable[tuple[int, bytes]]],
) -> Callable[..., Awaitable[None]]:
    """A minimal ASGI app answering each request with ``handle(method, path)``."""

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        while (await receive()).get("more_body"):
            pass
        status, body = await handle(scope["method"], scope["path"])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return app


async def test_open_loop_keeps_the_schedule_and_measures_from_due_time() -> None:
    """Sends follow start + i/rate; with one slot and a slow server, latency grows because
    it is measured from each due time (no coordinated omission)."""

    async def slow(method: str, path: str) -> tuple[int, bytes]:
        await asyncio.sleep(0.02)
        return 202, b"{}"

    transport = httpx.ASGITransport(app=_app(slow))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        txns = generate(TrafficProfile(), 1)
        result = await send_open_loop(client, txns, total=20, rate=200, headers={}, max_in_flight=1)
    assert [o.status_code for o in result.outcomes] == [202] * 20
    # 20 requests of 20 ms through one slot take >= 0.4 s although due within 0.1 s.
    assert result.elapsed_s >= 0.39
    assert result.outcomes[-1].latency_ms > result.outcomes[0].latency_ms + 200


async def test_await_decisions_polls_each_id_until_final_or_deadline() -> None:
    """Without an export endpoint, ids are polled one by one until their status is final;
    one that never decides is left out when the deadline passes."""
    polls: Counter[str] = Counter()
    stuck, fast, slow = uuid.UUID(int=1), uuid.UUID(int=2), uuid.UUID(int=3)

    async def handle(method: str, path: str) -> tuple[int, bytes]:
        if path == "/transactions":
            return 404, b"{}"
        txn_id = path.rsplit("/", 1)[-1]
        polls[txn_id] += 1
        if txn_id == str(fast) or (txn_id == str(slow) and polls[txn_id] >= 3):
            return 200, b'{"status": "BLOCKED", "risk_score": 100}'
        return 200, b'{"status": "PENDING"}'

    transport = httpx.ASGITransport(app=_app(handle))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        decided = await await_decisions(
            client, [stuck, fast, slow], since=SINCE, timeout_s=1.5, headers={}, concurrency=4
        )
    assert decided == {fast: "BLOCKED", slow: "BLOCKED"}
    assert polls[str(fast)] == 1
    assert polls[str(slow)] == 3
    assert polls[str(stuck)] >= 3


async def test_await_decisions_reads_the_export_and_asks_for_the_rest() -> None:
    """Decisions come from the NDJSON export; an id the export never shows (a replay from
    before ``since``) is then asked for by id."""
    in_export, replayed = uuid.UUID(int=10), uuid.UUID(int=11)
    requests: Counter[str] = Counter()

    async def handle(method: str, path: str) -> tuple[int, bytes]:
        requests[path] += 1
        if path == "/transactions":
            lines = [
                {"txn_id": str(in_export), "status": "FLAGGED", "risk_score": 80},
                {"txn_id": str(uuid.UUID(int=99)), "status": "APPROVED"},  # not ours
            ]
            return 200, b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        return 200, b'{"status": "APPROVED"}'

    transport = httpx.ASGITransport(app=_app(handle))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        decided = await await_decisions(
            client, [in_export, replayed], since=SINCE, timeout_s=5.0, headers={}, concurrency=4
        )
    assert decided == {in_export: "FLAGGED", replayed: "APPROVED"}
    assert requests[f"/transactions/{in_export}"] == 0
    assert requests[f"/transactions/{replayed}"] == 1
