"""The engine: sums rule scores and maps the total to APPROVED / FLAGGED / BLOCKED."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from fintrack.core.activity import Activity, entry_score
from fintrack.core.events import RuleHit
from fintrack.core.models import Defaults, Transaction
from fintrack.fraud.engine import Engine, Verdict, status_for
from fintrack.fraud.facts import Facts
from fintrack.fraud.rules import RuleContext
from fintrack.fraud.settings import BlocklistSettings, HighValueSettings, RuleSettings
from fintrack.fraud.velocity import window_stats

DEFAULTS = Defaults()
SCORE = entry_score("1700000000000-0")


def txn(**fields: Any) -> Transaction:
    values: dict[str, Any] = {
        "txn_id": uuid.uuid4(),
        "user_id": DEFAULTS.user_id,
        "amount": Decimal("499.00"),
        "currency": DEFAULTS.currency,
        "merchant_type": DEFAULTS.merchant_type,
        "source_ip": "12.34.56.78",
        "client_id": "acme",
        "received_at_ms": 1_700_000_000_000,
    }
    values.update(fields)
    values["amount"] = Decimal(values["amount"])
    return Transaction(**values)


def alone(t: Transaction, settings: RuleSettings | None = None) -> Facts:
    """Facts for a user whose only activity is this transaction."""
    history = [Activity(SCORE, t.txn_id, t.amount, t.currency)]
    return Facts(window_stats(history, SCORE, settings or RuleSettings()))


def test_seed_example_is_flagged_or_blocked() -> None:
    """The seed's 150,000 INR luxury purchase from 192.168.1.50 is not approved."""
    t = txn(
        user_id="user_123",
        amount="150000.00",
        currency="INR",
        merchant_type="luxury_goods",
        source_ip="192.168.1.50",
    )
    verdict = Engine(RuleSettings()).decide(t, alone(t))
    assert verdict.status in ("FLAGGED", "BLOCKED")
    assert {h.rule for h in verdict.hits} == {"high_value", "risky_merchant"}
    assert verdict.risk_score == 80


def test_seed_curl_is_flagged_on_high_value_alone() -> None:
    """The quick-start's 200000 (INR by default) from 12.34.56.78 is flagged by amount alone."""
    t = txn(amount="200000.00", source_ip="12.34.56.78")
    verdict = Engine(RuleSettings()).decide(t, alone(t))
    assert verdict.status == "FLAGGED"
    assert [h.rule for h in verdict.hits] == ["high_value"]


def test_ordinary_small_transaction_is_approved() -> None:
    """A 499 INR grocery purchase fires nothing and is approved with score 0."""
    t = txn(amount="499.00", merchant_type="groceries")
    assert Engine(RuleSettings()).decide(t, alone(t)) == Verdict("APPROVED", 0, ())


def test_blocklisted_ip_alone_blocks() -> None:
    """A blocklisted address blocks an otherwise harmless transaction."""
    t = txn(source_ip="203.0.113.9")
    verdict = Engine(RuleSettings(), ["203.0.113.0/24"]).decide(t, alone(t))
    assert verdict.status == "BLOCKED"
    assert [h.rule for h in verdict.hits] == ["ip_blocklist"]


def test_settings_networks_and_given_blocklist_both_apply() -> None:
    """Networks from the settings file and from the managed list are both matched."""
    settings = msgspec.structs.replace(
        RuleSettings(), blocklist=BlocklistSettings(networks=("2001:db8::/32",))
    )
    engine = Engine(settings, ["198.51.100.7"])
    assert engine.decide(txn(source_ip="2001:db8::1"), Facts()).status == "BLOCKED"
    assert engine.decide(txn(source_ip="198.51.100.7"), Facts()).status == "BLOCKED"
    assert engine.decide(txn(source_ip="198.51.100.8"), Facts()).status == "APPROVED"


def test_invalid_blocklist_entry_is_refused() -> None:
    """Building an engine with a malformed network raises ValueError."""
    with pytest.raises(ValueError, match="not an IP address or CIDR range"):
        Engine(RuleSettings(), ["10.0.0.1/8"])


def test_velocity_burst_from_history() -> None:
    """The sixth transaction within a minute fires velocity_count with the numbers."""
    t = txn(amount="100.00", currency="USD")
    history = [
        Activity(SCORE - i * 1_000_000, uuid.uuid4(), Decimal("100.00"), "USD") for i in range(1, 6)
    ]
    history.append(Activity(SCORE, t.txn_id, t.amount, t.currency))
    facts = Facts(window_stats(history, SCORE, RuleSettings()))
    verdict = Engine(RuleSettings()).decide(t, facts)
    assert verdict.hits == (RuleHit("velocity_count", 40, "6 transactions in 60 s, limit 5"),)
    assert verdict.status == "APPROVED"  # 40 < flag threshold 50: a burst alone only scores


def scored(high: int, merchant: int, blocklist: int = 100) -> RuleSettings:
    """Settings where the seed example's two rules add exactly ``high + merchant``."""
    return msgspec.structs.replace(
        RuleSettings(),
        flag_threshold=50,
        block_threshold=100,
        high_value=HighValueSettings(score=high),
        merchants={"luxury_goods": merchant},
        blocklist=BlocklistSettings(score=blocklist),
    )


@pytest.mark.parametrize(
    ("high", "merchant", "status"),
    [
        (20, 29, "APPROVED"),  # 49: one below flag
        (20, 30, "FLAGGED"),  # 50: exactly flag
        (60, 39, "FLAGGED"),  # 99: one below block
        (60, 40, "BLOCKED"),  # 100: exactly block
    ],
)
def test_combined_scores_on_the_thresholds(high: int, merchant: int, status: str) -> None:
    """Summed scores landing exactly on a threshold reach it; one below does not."""
    t = txn(amount="150000.00", merchant_type="luxury_goods")
    verdict = Engine(scored(high, merchant)).decide(t, Facts())
    assert verdict.risk_score == high + merchant
    assert verdict.status == status
    assert sum(h.score for h in verdict.hits) == verdict.risk_score


def test_three_rules_sum_onto_block() -> None:
    """Blocklist, high value and merchant scores add up."""
    t = txn(amount="150000.00", merchant_type="luxury_goods", source_ip="10.9.9.9")
    verdict = Engine(scored(30, 20, blocklist=50), ["10.0.0.0/8"]).decide(t, Facts())
    assert [h.rule for h in verdict.hits] == ["ip_blocklist", "high_value", "risky_merchant"]
    assert (verdict.risk_score, verdict.status) == (100, "BLOCKED")


@pytest.mark.parametrize(
    ("score", "status"), [(0, "APPROVED"), (49, "APPROVED"), (50, "FLAGGED"), (100, "BLOCKED")]
)
def test_status_for_thresholds(score: int, status: str) -> None:
    """A score at or above block blocks, at or above flag flags, else approves."""
    assert status_for(score, RuleSettings()) == status


def test_flag_equal_to_block_never_flags() -> None:
    """With flag == block, reaching the threshold blocks."""
    settings = msgspec.structs.replace(RuleSettings(), flag_threshold=70, block_threshold=70)
    assert status_for(70, settings) == "BLOCKED"
    assert status_for(69, settings) == "APPROVED"


def test_decide_batch_matches_decide() -> None:
    """A batch gives, in order, what deciding each transaction alone gives."""
    engine = Engine(RuleSettings(), ["203.0.113.0/24"])
    items = [
        (txn(amount="499.00"), Facts()),
        (txn(amount="200000.00"), Facts()),
        (txn(source_ip="203.0.113.1"), Facts()),
    ]
    verdicts = engine.decide_batch(items)
    assert verdicts == [engine.decide(t, f) for t, f in items]
    assert [v.status for v in verdicts] == ["APPROVED", "FLAGGED", "BLOCKED"]


def test_custom_rules_share_one_signature() -> None:
    """Any callable with the rule signature can be plugged in; None means no hit."""

    def always(t: Transaction, f: Facts, c: RuleContext) -> RuleHit | None:
        return RuleHit("always", 7, "always fires")

    def never(t: Transaction, f: Facts, c: RuleContext) -> RuleHit | None:
        return None

    verdict = Engine(RuleSettings(), rules=(always, never, always)).decide(txn(), Facts())
    assert verdict.risk_score == 14
    assert len(verdict.hits) == 2
