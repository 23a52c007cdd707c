"""The fraud rules: small pure callables sharing one signature.

Each rule looks at a transaction, the facts gathered for it and the rule context, and
returns a ``RuleHit`` (its name, the score it adds, a reason with the numbers) or None.
A rule whose configured score is 0 is off. Rule names are stable: they are stored in
``rule_hits.rule`` and used as SSE filter values. Each rule returns at most one hit (one
row per rule and transaction); the velocity rules name every window that was exceeded.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from fintrack.core.currencies import MINOR_UNITS
from fintrack.core.events import RuleHit
from fintrack.core.models import Transaction
from fintrack.fraud.facts import Facts
from fintrack.fraud.ipindex import IPIndex
from fintrack.fraud.settings import RuleSettings, VelocityWindow, to_base_or_none


class RuleContext:
    """What every rule may consult: the settings in force and the blocklist index."""

    __slots__ = ("ips", "settings", "windows")

    def __init__(self, settings: RuleSettings, ips: IPIndex) -> None:
        self.settings = settings
        self.ips = ips
        self.windows: dict[int, VelocityWindow] = {w.window_s: w for w in settings.velocity.windows}


Rule = Callable[[Transaction, Facts, RuleContext], RuleHit | None]


def money(currency: str, amount: Decimal) -> str:
    """``INR 150,000.00``: grouped, with the currency's decimal places."""
    return f"{currency} {amount:,.{MINOR_UNITS.get(currency, 2)}f}"


def duration(seconds: int) -> str:
    """``60 s``, ``5 min``, ``24 h``, as people write window lengths."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds > 60 and seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def ip_blocklist(txn: Transaction, facts: Facts, ctx: RuleContext) -> RuleHit | None:
    """The source IP is in a blocked address or range (longest prefix named)."""
    score = ctx.settings.blocklist.score
    if score <= 0 or not ctx.ips:  # an empty blocklist: no need to parse the address
        return None
    network = ctx.ips.match(txn.source_ip)
    if network is None:
        return None
    return RuleHit("ip_blocklist", score, f"source IP {txn.source_ip} is in blocklist {network}")


def velocity_count(txn: Transaction, facts: Facts, ctx: RuleContext) -> RuleHit | None:
    """More of the user's transactions in a window than its ``max_count``."""
    score = 0
    reasons: list[str] = []
    for stats in facts.velocity:
        w = ctx.windows.get(stats.window_s)
        if w is None or w.max_count is None or w.count_score <= 0:
            continue
        if stats.count > w.max_count:
            score += w.count_score
            noun = "transaction" if stats.count == 1 else "transactions"
            reasons.append(f"{stats.count} {noun} in {duration(w.window_s)}, limit {w.max_count}")
    if not reasons:
        return None
    return RuleHit("velocity_count", score, "; ".join(reasons))


def velocity_amount(txn: Transaction, facts: Facts, ctx: RuleContext) -> RuleHit | None:
    """More money (in the base currency) in a window than its ``max_amount``."""
    base = ctx.settings.base_currency
    score = 0
    reasons: list[str] = []
    for stats in facts.velocity:
        w = ctx.windows.get(stats.window_s)
        if w is None or w.max_amount is None or w.amount_score <= 0:
            continue
        if stats.amount > w.max_amount:
            score += w.amount_score
            reason = (
                f"{money(base, stats.amount)} in {duration(w.window_s)}, "
                f"limit {money(base, w.max_amount)}"
            )
            if stats.unpriced:
                reason += f" ({stats.unpriced} without an exchange rate not counted)"
            if stats.unsummed:
                reason += f" (at least: the {stats.unsummed} oldest not summed)"
            reasons.append(reason)
    if not reasons:
        return None
    return RuleHit("velocity_amount", score, "; ".join(reasons))


def high_value(txn: Transaction, facts: Facts, ctx: RuleContext) -> RuleHit | None:
    """The amount is at or above its currency's threshold, or, for a currency without
    one, at or above the base-currency default once converted."""
    hv = ctx.settings.high_value
    if hv.score <= 0:
        return None
    own = hv.thresholds.get(txn.currency)
    if own is not None:
        if txn.amount < own:
            return None
        reason = f"{money(txn.currency, txn.amount)} is at or above the {money(txn.currency, own)}"
        return RuleHit("high_value", hv.score, reason + " threshold")
    base = ctx.settings.base_currency
    converted = to_base_or_none(txn.amount, txn.currency, ctx.settings)
    if converted is None or converted < hv.default_threshold:
        return None
    shown = money(txn.currency, txn.amount)
    if txn.currency != base:
        shown += f" ({money(base, converted)})"
    reason = f"{shown} is at or above the {money(base, hv.default_threshold)} threshold"
    return RuleHit("high_value", hv.score, reason)


def risky_merchant(txn: Transaction, facts: Facts, ctx: RuleContext) -> RuleHit | None:
    """The merchant category carries a risk weight (categories ignore case)."""
    weight = ctx.settings.merchants.get(txn.merchant_type.lower(), 0)
    if weight <= 0:
        return None
    return RuleHit(
        "risky_merchant",
        weight,
        f"merchant category {txn.merchant_type} is high-risk (weight {weight})",
    )


RULES: tuple[Rule, ...] = (
    ip_blocklist,
    velocity_count,
    velocity_amount,
    high_value,
    risky_merchant,
)
RULE_NAMES: tuple[str, ...] = (
    "ip_blocklist",
    "velocity_count",
    "velocity_amount",
    "high_value",
    "risky_merchant",
)
