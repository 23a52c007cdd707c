"""The project's error hierarchy. Each edge (HTTP, worker, CLI) translates it in one place."""

from __future__ import annotations


class FinTrackError(Exception):
    """Base of every error this project raises on purpose."""


class FieldError(FinTrackError):
    """One input field is invalid. ``field`` is its JSON name (or path), ``problem`` says why."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class ConflictError(FinTrackError):
    """The same ``txn_id`` was already used with a different body."""


class UnavailableError(FinTrackError):
    """A dependency (Redis, PostgreSQL) can't be reached; the caller should retry later."""
