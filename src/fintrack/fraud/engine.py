"""The fraud engine: runs the rules, sums their scores, maps the total to a verdict.

Pure: no I/O, no clock. The worker builds an ``Engine`` from the settings and blocklist in
force (and a new one when either changes), gathers ``Facts``, and commits the verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Literal

import msgspec

from fintrack.core.events import RuleHit
from fintrack.core.models import Transaction
from fintrack.fraud.facts import Facts
from fintrack.fraud.ipindex import IPIndex
from fintrack.fraud.rules import RULES, Rule, RuleContext
from fintrack.fraud.settings import RuleSettings

VerdictStatus = Literal["APPROVED", "FLAGGED", "BLOCKED"]


class Verdict(msgspec.Struct, frozen=True):
    """The engine's answer for one transaction: status, total risk score, and the hits."""

    status: VerdictStatus
    risk_score: int
    hits: tuple[RuleHit, ...]


def status_for(risk_score: int, settings: RuleSettings) -> VerdictStatus:
    """BLOCKED at or above ``block_threshold``, FLAGGED at or above ``flag_threshold``."""
    if risk_score >= settings.block_threshold:
        return "BLOCKED"
    if risk_score >= settings.flag_threshold:
        return "FLAGGED"
    return "APPROVED"


class Engine:
    """Decides transactions with a fixed set of rules, settings and blocklist."""

    __slots__ = ("_ctx", "_rules")

    def __init__(
        self,
        settings: RuleSettings,
        blocklist: Iterable[str] = (),
        *,
        rules: Sequence[Rule] = RULES,
    ) -> None:
        """``blocklist`` (address or CIDR texts, e.g. the managed list from PostgreSQL) is
        matched together with ``settings.blocklist.networks``. Raises ``ValueError`` for an
        entry that is not an address or range."""
        self._ctx = RuleContext(settings, IPIndex(chain(settings.blocklist.networks, blocklist)))
        self._rules = tuple(rules)

    @property
    def settings(self) -> RuleSettings:
        return self._ctx.settings

    @property
    def ips(self) -> IPIndex:
        return self._ctx.ips

    def decide(self, txn: Transaction, facts: Facts) -> Verdict:
        """Run every rule; the risk score is the sum of the hits' scores."""
        ctx = self._ctx
        hits = tuple(hit for rule in self._rules if (hit := rule(txn, facts, ctx)) is not None)
        score = sum(hit.score for hit in hits)
        return Verdict(status_for(score, ctx.settings), score, hits)

    def decide_batch(self, items: Sequence[tuple[Transaction, Facts]]) -> list[Verdict]:
        """``decide`` for each (transaction, facts) pair, in order."""
        decide = self.decide
        return [decide(txn, facts) for txn, facts in items]
