"""What the api's handlers share, kept on ``app.state`` for the app's lifetime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Litestar
from litestar.connection import ASGIConnection
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.core.models import Defaults
from fintrack.ingest.handoff import Coalescer, HandOff
from fintrack.ingest.keyring import KeyRing
from fintrack.ingest.limits import BodyLimits
from fintrack.ingest.ratelimit import RateGate
from fintrack.ingest.waiters import Waiters


@dataclass(frozen=True, slots=True)
class Resources:
    """Clients and helpers opened by the lifespan and closed by it."""

    settings: Settings
    defaults: Defaults
    redis: Redis
    pool: AsyncConnectionPool[Any]
    handoff: HandOff
    coalescer: Coalescer
    waiters: Waiters
    keyring: KeyRing
    rate_gate: RateGate
    limits: BodyLimits


def defaults_from(settings: Settings) -> Defaults:
    """The documented defaults for fields a client leaves out."""
    return Defaults(
        currency=settings.default_currency,
        user_id=settings.default_user_id,
        merchant_type=settings.default_merchant_type,
    )


def settings_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


def app_resources(app: Litestar) -> Resources:
    """What the lifespan opened (present once it has started)."""
    resources: Resources = app.state.resources
    return resources


def resources_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Resources:
    return app_resources(connection.app)
