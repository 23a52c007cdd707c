"""API keys issued at run time: PostgreSQL holds their digests, Redis announces changes.

Keys in ``FINTRACK_API_KEYS`` are the bootstrap set; these come on top and can be created
and revoked without restarting anything (``/admin/keys``, ``fintrack keys``). Writers
change the table, then bump a version counter in Redis; each api process reloads its key
set when it sees the counter move. Only ``sha256:`` digests are stored: a secret is
returned once, by ``create``, and exists nowhere else afterwards.
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any, Final

import msgspec
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from fintrack.config import Settings, hash_secret
from fintrack.core.errors import FieldError

# Recognisable in a leaked paste, for secret scanners; not itself a secret.
SECRET_PREFIX: Final = "ftk_"  # noqa: S105
_NAME: Final = re.compile(r"^[\w.@:+-]{1,64}$")


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    """One issued key, without its secret. ``name`` is the client id it acts as."""

    id: str
    name: str
    created_at: str
    created_by: str
    revoked_at: str | None = None


class IssuedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key just created, with the secret the client must keep: it is shown only once."""

    id: str
    name: str
    secret: str
    created_at: str


def version_key(settings: Settings) -> str:
    return f"{settings.key_prefix}:apikeys:version"


def check_name(name: str) -> str:
    """A client name: 1-64 letters, digits or ``_.@:+-``; raise ``FieldError`` if not."""
    if not _NAME.fullmatch(name):
        raise FieldError("name", "must be 1-64 letters, digits or _.@:+- characters")
    return name


async def create(
    pool: AsyncConnectionPool[Any], redis: Redis, settings: Settings, name: str, *, actor: str
) -> IssuedKey:
    """Issue a new key for client ``name``; its secret is in the result and nowhere else."""
    check_name(name)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key_id = uuid.uuid4()
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO api_keys (id, name, digest, created_by) VALUES (%s, %s, %s, %s)"
            " RETURNING created_at",
            (key_id, name, hash_secret(secret), actor[:64]),
        )
        row = await cur.fetchone()
    assert row is not None
    await redis.incr(version_key(settings))
    return IssuedKey(id=str(key_id), name=name, secret=secret, created_at=row[0].isoformat())


async def revoke(
    pool: AsyncConnectionPool[Any], redis: Redis, settings: Settings, key_id: str
) -> ApiKey | None:
    """Revoke key ``key_id`` at once; None if there is no such active key."""
    try:
        parsed = uuid.UUID(key_id)
    except ValueError:
        raise FieldError("id", "must be a key id (a UUID)") from None
    async with pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL"
            " RETURNING id, name, created_at, created_by, revoked_at",
            (parsed,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    await redis.incr(version_key(settings))
    return _key(row)


async def list_keys(pool: AsyncConnectionPool[Any]) -> list[ApiKey]:
    """Every issued key, revoked ones included, oldest first."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, name, created_at, created_by, revoked_at FROM api_keys"
            " ORDER BY created_at, id"
        )
        rows = await cur.fetchall()
    return [_key(row) for row in rows]


async def active_digests(pool: AsyncConnectionPool[Any]) -> dict[str, str]:
    """{digest: client name} of every key not revoked."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT digest, name FROM api_keys WHERE revoked_at IS NULL")
        rows = await cur.fetchall()
    return {str(digest): str(name) for digest, name in rows}


async def current_version(redis: Redis, settings: Settings) -> int:
    raw = await redis.get(version_key(settings))
    return int(raw) if raw is not None else 0


def _key(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, created_at, created_by, revoked_at = row
    return ApiKey(
        id=str(key_id),
        name=str(name),
        created_at=created_at.isoformat(),
        created_by=str(created_by),
        revoked_at=revoked_at.isoformat() if revoked_at is not None else None,
    )
