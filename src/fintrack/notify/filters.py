"""Which events a feed client asked for: ``status``, ``severity``, ``user_id``, ``rule``,
``kind`` query parameters, applied alike to live events and to replayed history."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fintrack.core.events import SEVERITY_ORDER
from fintrack.core.models import FINAL_STATUSES
from fintrack.notify.frames import EventMeta

_KINDS = ("decision", "alert")
_MAX_TEXT = 128


class FilterError(ValueError):
    """A filter parameter has a value no event can have; ``param`` names it."""

    def __init__(self, param: str, problem: str) -> None:
        super().__init__(f"{param}: {problem}")
        self.param = param
        self.problem = problem


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A conjunction of conditions; ``None`` (or 0 for severity) means "any"."""

    statuses: frozenset[str] | None = None
    min_severity: int = 0
    user_id: str | None = None
    rule: str | None = None
    kinds: frozenset[str] | None = None

    def matches(self, meta: EventMeta) -> bool:
        return (
            (self.statuses is None or meta.status in self.statuses)
            and meta.severity >= self.min_severity
            and (self.user_id is None or meta.user_id == self.user_id)
            and (self.rule is None or self.rule in meta.rules)
            and (self.kinds is None or meta.kind in self.kinds)
        )


def _values(raw: Iterable[str]) -> list[str]:
    """Repeated parameters and comma lists alike: ``?status=A&status=B,C`` → A, B, C."""
    return [part.strip() for value in raw for part in value.split(",") if part.strip()]


def _choices(param: str, raw: list[str], allowed: tuple[str, ...], upper: bool) -> frozenset[str]:
    chosen = set()
    for value in _values(raw):
        normal = value.upper() if upper else value.lower()
        if normal not in allowed:
            raise FilterError(param, f"{value[:40]!r} is not one of {', '.join(allowed)}")
        chosen.add(normal)
    return frozenset(chosen)


def _single(param: str, raw: list[str]) -> str | None:
    if not raw:
        return None
    if len(raw) > 1:
        raise FilterError(param, "give it at most once")
    value = raw[0].strip()
    if not value or len(value) > _MAX_TEXT:
        raise FilterError(param, f"must be 1 to {_MAX_TEXT} characters")
    return value


def parse_filter(params: dict[str, list[str]]) -> EventFilter:
    """Query parameters (each name → all its values) → an ``EventFilter``.

    Unknown parameters are ignored (``last_event_id`` and tools' cache busters live there).
    """
    statuses = _choices("status", params.get("status", []), FINAL_STATUSES, upper=True)
    kinds = _choices("kind", params.get("kind", []), _KINDS, upper=False)
    severity = _single("severity", params.get("severity", []))
    min_severity = 0
    if severity is not None:
        if severity.lower() not in SEVERITY_ORDER:
            raise FilterError(
                "severity", f"{severity[:40]!r} is not one of {', '.join(SEVERITY_ORDER)}"
            )
        min_severity = SEVERITY_ORDER.index(severity.lower())
    return EventFilter(
        statuses=statuses or None,
        min_severity=min_severity,
        user_id=_single("user_id", params.get("user_id", [])),
        rule=_single("rule", params.get("rule", [])),
        kinds=kinds or None,
    )
