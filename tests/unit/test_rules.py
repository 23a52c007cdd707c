"""Each fraud rule at its edges: when it fires, what it adds, and the reason it gives."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from fintrack.core.models import Transaction
from fintrack.fraud.facts import Facts, WindowStats
from fintrack.fraud.ipindex import IPIndex
from fintrack.fraud.rules import (
    RULE_NAMES,
    RULES,
    RuleContext,
    duration,
    high_value,
    ip_blocklist,
    money,
    risky_merchant,
    velocity_amount,
    velocity_count,
)
from fintrack.fraud.settings import HighValueSettings, RuleSettings

NO_FACTS = Facts()


def txn(**fields: Any) -> Transaction:
    values: dict[str, Any] = {
        "txn_id": uuid.uuid4(),
        "user_id": "user_123",
        "amount": Decimal("499.00"),
        "currency": "INR",
        "merchant_type": "groceries",
        "source_ip": "12.34.56.78",
        "client_id": "acme",
        "received_at_ms": 1_700_000_000_000,
    }
    values.update(fields)
    if isinstance(values["amount"], str):
        values["amount"] = Decimal(values["amount"])
    return Transaction(**values)


def ctx(settings: RuleSettings | None = None, networks: tuple[str, ...] = ()) -> RuleContext:
    return RuleContext(settings or RuleSettings(), IPIndex(networks))


def changed(**fields: Any) -> RuleSettings:
    return msgspec.structs.replace(RuleSettings(), **fields)


# ---- ip_blocklist -----------------------------------------------------------------------


def test_blocklisted_ip_hits_with_the_network() -> None:
    """An address inside a blocked range scores the blocklist score and names the range."""
    hit = ip_blocklist(txn(source_ip="203.0.113.9"), NO_FACTS, ctx(networks=("203.0.113.0/24",)))
    assert hit is not None
    assert (hit.rule, hit.score) == ("ip_blocklist", 100)
    assert hit.reason == "source IP 203.0.113.9 is in blocklist 203.0.113.0/24"


def test_ip_outside_the_blocklist_does_not_hit() -> None:
    """An address next to a blocked range is not hit."""
    hit = ip_blocklist(txn(source_ip="203.0.114.0"), NO_FACTS, ctx(networks=("203.0.113.0/24",)))
    assert hit is None


def test_blocklist_score_zero_turns_the_rule_off() -> None:
    """With blocklist.score = 0 even a listed address passes this rule."""
    settings = changed(blocklist=msgspec.structs.replace(RuleSettings().blocklist, score=0))
    assert ip_blocklist(txn(source_ip="1.2.3.4"), NO_FACTS, ctx(settings, ("1.2.3.4",))) is None


# ---- velocity_count ---------------------------------------------------------------------


def stats(window_s: int, count: int, amount: str = "0", unpriced: int = 0) -> WindowStats:
    return WindowStats(window_s, count, Decimal(amount), unpriced)


def test_velocity_count_at_the_limit_does_not_hit() -> None:
    """Exactly max_count transactions in a window is allowed."""
    facts = Facts((stats(60, 5), stats(86400, 50)))
    assert velocity_count(txn(), facts, ctx()) is None


def test_velocity_count_one_over_the_limit_hits() -> None:
    """One more than max_count fires with the count, the window and the limit."""
    hit = velocity_count(txn(), Facts((stats(60, 6), stats(86400, 6))), ctx())
    assert hit is not None
    assert (hit.rule, hit.score, hit.reason) == (
        "velocity_count",
        40,
        "6 transactions in 60 s, limit 5",
    )


def test_velocity_count_sums_every_exceeded_window() -> None:
    """Several exceeded windows make one hit whose score and reason cover them all."""
    hit = velocity_count(txn(), Facts((stats(60, 7), stats(86400, 51))), ctx())
    assert hit is not None
    assert hit.score == 40 + 30
    assert hit.reason == "7 transactions in 60 s, limit 5; 51 transactions in 24 h, limit 50"


def test_velocity_ignores_windows_that_are_not_configured() -> None:
    """Facts for a window the settings no longer have are ignored."""
    facts = Facts((stats(300, 1000, "99999999"),))
    assert velocity_count(txn(), facts, ctx()) is None
    assert velocity_amount(txn(), facts, ctx()) is None


# ---- velocity_amount --------------------------------------------------------------------


def test_velocity_amount_at_the_limit_does_not_hit() -> None:
    """A total equal to max_amount is allowed."""
    facts = Facts((stats(60, 1, "5000.00"), stats(86400, 1, "10000.00")))
    assert velocity_amount(txn(), facts, ctx()) is None


def test_velocity_amount_just_over_the_limit_hits() -> None:
    """A cent over max_amount fires, in the base currency, with the limit."""
    hit = velocity_amount(txn(), Facts((stats(60, 1, "5000.01"),)), ctx())
    assert hit is not None
    assert (hit.rule, hit.score) == ("velocity_amount", 30)
    assert hit.reason == "USD 5,000.01 in 60 s, limit USD 5,000.00"


def test_velocity_amount_day_window_reason() -> None:
    """The 24 h window's reason reads like the issue's example."""
    hit = velocity_amount(txn(), Facts((stats(60, 2, "10"), stats(86400, 9, "12500"))), ctx())
    assert hit is not None
    assert (hit.score, hit.reason) == (40, "USD 12,500.00 in 24 h, limit USD 10,000.00")


def test_velocity_amount_mentions_unpriced_entries() -> None:
    """Entries left out for want of a rate are mentioned in the reason."""
    hit = velocity_amount(txn(), Facts((stats(86400, 9, "12500", unpriced=2),)), ctx())
    assert hit is not None
    assert hit.reason.endswith("(2 without an exchange rate not counted)")


def test_velocity_amount_says_when_it_is_a_lower_bound() -> None:
    """A window summed over its newest entries only says its amount is at least that."""
    hit = velocity_amount(
        txn(), Facts((WindowStats(86400, 1500, Decimal("12500"), unsummed=500),)), ctx()
    )
    assert hit is not None
    assert hit.reason.endswith("(at least: the 500 oldest not summed)")


# ---- high_value -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "fires"),
    [
        ("99999.99", "INR", False),
        ("100000.00", "INR", True),
        ("100000.01", "INR", True),
        ("9999.99", "USD", False),
        ("10000.00", "USD", True),
        ("1499999", "JPY", False),
        ("1500000", "JPY", True),
        ("1500001", "JPY", True),
    ],
)
def test_high_value_per_currency_threshold(amount: str, currency: str, fires: bool) -> None:
    """Just below a currency's own threshold passes; at or above it fires."""
    hit = high_value(txn(amount=amount, currency=currency), NO_FACTS, ctx())
    assert (hit is not None) is fires
    if hit is not None:
        assert hit.score == 50


def test_high_value_reason_names_amount_and_threshold() -> None:
    """The reason quotes the amount and threshold in the transaction's currency."""
    hit = high_value(txn(amount="150000.00"), NO_FACTS, ctx())
    assert hit is not None
    assert hit.reason == "INR 150,000.00 is at or above the INR 100,000.00 threshold"
    hit = high_value(txn(amount="1500000", currency="JPY"), NO_FACTS, ctx())
    assert hit is not None
    assert hit.reason == "JPY 1,500,000 is at or above the JPY 1,500,000 threshold"


@pytest.mark.parametrize(("amount", "fires"), [("4999.99", False), ("5000.00", True)])
def test_high_value_converts_currencies_without_their_own_threshold(
    amount: str, fires: bool
) -> None:
    """Without its own threshold a currency is converted and held to the base default."""
    settings = changed(rates={"USD": Decimal(1), "CHF": Decimal(2)})
    hit = high_value(txn(amount=amount, currency="CHF"), NO_FACTS, ctx(settings))
    assert (hit is not None) is fires
    if hit is not None:
        assert hit.reason == (
            "CHF 5,000.00 (USD 10,000.00) is at or above the USD 10,000.00 threshold"
        )


def test_high_value_default_rates_for_an_unlisted_currency() -> None:
    """With the default rate table, CHF crosses USD 10,000 between 8,849.55 and 8,849.56."""
    assert high_value(txn(amount="8849.55", currency="CHF"), NO_FACTS, ctx()) is None
    assert high_value(txn(amount="8849.56", currency="CHF"), NO_FACTS, ctx()) is not None


def test_high_value_base_currency_without_own_threshold() -> None:
    """The base currency without its own threshold uses the default, shown once."""
    settings = changed(high_value=HighValueSettings(thresholds={}))
    hit = high_value(txn(amount="10000.00", currency="USD"), NO_FACTS, ctx(settings))
    assert hit is not None
    assert hit.reason == "USD 10,000.00 is at or above the USD 10,000.00 threshold"


def test_high_value_skips_a_currency_without_rate_or_threshold() -> None:
    """A currency with neither its own threshold nor a rate can't be judged: no hit."""
    assert high_value(txn(amount="999999999", currency="THB"), NO_FACTS, ctx()) is None


# ---- risky_merchant ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("merchant", "weight"),
    [("luxury_goods", 30), ("crypto", 40), ("gambling", 40), ("gift_cards", 35)],
)
def test_risky_merchant_weights(merchant: str, weight: int) -> None:
    """Each risky category adds its configured weight and says so."""
    hit = risky_merchant(txn(merchant_type=merchant), NO_FACTS, ctx())
    assert hit is not None
    assert (hit.rule, hit.score) == ("risky_merchant", weight)
    assert hit.reason == f"merchant category {merchant} is high-risk (weight {weight})"


def test_risky_merchant_ignores_case() -> None:
    """Categories match whatever case the client used."""
    hit = risky_merchant(txn(merchant_type="Luxury_Goods"), NO_FACTS, ctx())
    assert hit is not None
    assert hit.score == 30


def test_ordinary_and_zero_weight_merchants_do_not_hit() -> None:
    """Unlisted categories and weight 0 add nothing."""
    settings = changed(merchants={"general": 0})
    assert risky_merchant(txn(merchant_type="general"), NO_FACTS, ctx()) is None
    assert risky_merchant(txn(merchant_type="general"), NO_FACTS, ctx(settings)) is None
    assert risky_merchant(txn(merchant_type="luxury_goods"), NO_FACTS, ctx(settings)) is None


# ---- shared -----------------------------------------------------------------------------


def test_rule_names_are_stable_snake_case() -> None:
    """Every rule reports the name listed for it in RULE_NAMES, in order."""
    everything = txn(amount="150000.00", merchant_type="crypto", source_ip="10.0.0.1")
    facts = Facts((stats(60, 99, "99999"),))
    hits = [rule(everything, facts, ctx(networks=("10.0.0.0/8",))) for rule in RULES]
    assert [h.rule if h else None for h in hits] == list(RULE_NAMES)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", name) for name in RULE_NAMES)


@pytest.mark.parametrize(
    ("seconds", "text"), [(1, "1 s"), (60, "60 s"), (300, "5 min"), (3600, "1 h"), (86400, "24 h")]
)
def test_duration_text(seconds: int, text: str) -> None:
    """Window lengths read as people write them."""
    assert duration(seconds) == text


def test_money_text_uses_the_currency_decimals() -> None:
    """Amounts are grouped and shown with the currency's minor units."""
    assert money("INR", Decimal("150000")) == "INR 150,000.00"
    assert money("JPY", Decimal("1500000")) == "JPY 1,500,000"
    assert money("BHD", Decimal("1.5")) == "BHD 1.500"
