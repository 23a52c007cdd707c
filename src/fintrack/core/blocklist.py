"""The IP blocklist: PostgreSQL holds it, a version counter in Redis announces changes.

Writers (the admin API, ``fintrack blocklist``) change the table and bump the version in
one step each; workers compare the version once per batch and reload only when it moved.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import msgspec
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from fintrack.config import Settings
from fintrack.core.errors import FieldError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BlockedNetwork(msgspec.Struct, frozen=True):
    """One blocklist entry: a single address is stored as a /32 or /128 network."""

    network: str
    reason: str
    added_by: str
    added_at: str


def parse_network(text: str) -> IPNetwork:
    """``10.0.0.0/8``, ``2001:db8::/32`` or a single address; host bits must be zero."""
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        raise FieldError(
            "network", f"{text[:60]!r} is not an IP address or CIDR range: {e}"
        ) from None


def version_key(settings: Settings) -> str:
    return f"{settings.key_prefix}:blocklist:version"


async def add(
    pool: AsyncConnectionPool[Any],
    redis: Redis,
    settings: Settings,
    network: str,
    *,
    reason: str = "",
    actor: str = "",
) -> str:
    """Add (or update the reason of) a network; returns its canonical CIDR text."""
    net = parse_network(network)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO ip_blocklist (network, reason, added_by) VALUES (%s, %s, %s)"
            " ON CONFLICT (network) DO UPDATE SET reason = EXCLUDED.reason",
            (str(net), reason[:200], actor[:64]),
        )
    await redis.incr(version_key(settings))
    return str(net)


async def remove(
    pool: AsyncConnectionPool[Any], redis: Redis, settings: Settings, network: str
) -> bool:
    """Remove a network; False if it was not on the list."""
    net = parse_network(network)
    async with pool.connection() as conn:
        cur = await conn.execute("DELETE FROM ip_blocklist WHERE network = %s", (str(net),))
        removed: bool = cur.rowcount > 0
    if removed:
        await redis.incr(version_key(settings))
    return removed


async def load(pool: AsyncConnectionPool[Any]) -> list[BlockedNetwork]:
    """Every entry, narrowest ranges last (the order does not affect matching)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT network::text, reason, added_by, added_at FROM ip_blocklist ORDER BY network"
        )
        rows = await cur.fetchall()
    return [
        BlockedNetwork(str(net), str(reason), str(by), at.isoformat())
        for net, reason, by, at in rows
    ]


async def current_version(redis: Redis, settings: Settings) -> int:
    raw = await redis.get(version_key(settings))
    return int(raw) if raw is not None else 0
