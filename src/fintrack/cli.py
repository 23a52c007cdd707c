"""The ``fintrack`` command. Each role is imported lazily inside its command, so
``run api`` never loads the worker and ``--help`` stays fast."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from fintrack.config import Settings, SettingsError, hash_secret

app = typer.Typer(no_args_is_help=True, help="FinTrack-Sentinel: real-time fraud detection.")
run_app = typer.Typer(no_args_is_help=True, help="Run one role (or all of them).")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
blocklist_app = typer.Typer(no_args_is_help=True, help="Manage the IP blocklist.")
app.add_typer(run_app, name="run")
app.add_typer(db_app, name="db")
app.add_typer(blocklist_app, name="blocklist")

Port = Annotated[int | None, typer.Option(help="Port to listen on (default from settings).")]
Host = Annotated[str | None, typer.Option(help="Address to bind (0.0.0.0 in containers).")]


def _settings(**overrides: object) -> Settings:
    """Settings from the environment, with CLI options exported so Granian workers see them."""
    for name, value in overrides.items():
        if value is not None:
            os.environ[f"FINTRACK_{name.upper()}"] = str(value)
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        typer.echo(f"configuration error: {e}", err=True)
        raise typer.Exit(2) from None
    from fintrack.log import configure_logging

    configure_logging(settings)
    return settings


@run_app.command("api")
def run_api(host: Host = None, port: Port = None) -> None:
    """The ingest gateway: POST /transactions answers 202 once the hand-off is durable."""
    from fintrack.core.serve import serve

    settings = _settings(api_host=host, api_port=port)
    serve(
        "fintrack.ingest.app:create_app",
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.http_workers,
        kill_timeout_s=10,
    )


@run_app.command("worker")
def run_worker(
    drain: Annotated[
        bool, typer.Option(help="Process what is in the stream, then exit (tests, batch jobs).")
    ] = False,
    consumer: Annotated[
        str | None, typer.Option(help="Consumer name (default: hostname-pid).")
    ] = None,
) -> None:
    """A fraud worker: reads the transactions stream, decides, commits, publishes."""
    from fintrack.fraud.worker import run

    settings = _settings(worker_consumer=consumer)
    raise typer.Exit(run(settings, drain=drain))


@run_app.command("notifier")
def run_notifier(host: Host = None, port: Port = None) -> None:
    """The live security feed (SSE) and the admin dashboard."""
    from fintrack.core.serve import serve

    settings = _settings(notifier_host=host, notifier_port=port)
    serve(
        "fintrack.notify.app:create_app",
        host=settings.notifier_host,
        port=settings.notifier_port,
        workers=settings.http_workers,
        # An open SSE stream counts as in flight: never wait longer than a stream lives.
        kill_timeout_s=max(1, min(30, int(settings.sse_lifetime_s))),
    )


@run_app.command("all")
def run_all(
    workers: Annotated[int, typer.Option(min=1, max=32, help="Worker processes.")] = 2,
) -> None:
    """Every role in one command, on embedded Redis and PostgreSQL unless URLs are set."""
    from fintrack.local import run_all as run_everything

    settings = _settings()
    raise typer.Exit(run_everything(settings, workers=workers))


@db_app.command("migrate")
def db_migrate() -> None:
    """Apply pending schema migrations (safe to run from several containers at once)."""
    from fintrack.core.db import migrate

    settings = _settings()
    try:
        settings.require("database_url")
    except SettingsError as e:
        typer.echo(f"configuration error: {e}", err=True)
        raise typer.Exit(2) from None
    applied = migrate(settings.database_url)
    typer.echo(f"applied: {', '.join(applied)}" if applied else "schema is up to date")


@app.command("hash-secret")
def hash_secret_command(
    name: Annotated[str, typer.Argument(help="Client or admin name the secret belongs to.")],
) -> None:
    """Read a secret from stdin; print the `name=sha256:...` entry for FINTRACK_API_KEYS or
    FINTRACK_ADMIN_TOKENS."""
    secret = sys.stdin.readline().strip()
    if not secret:
        typer.echo("no secret on standard input", err=True)
        raise typer.Exit(2)
    typer.echo(f"{name}={hash_secret(secret)}")


def _blocklist_call(action: str, network: str | None = None, reason: str = "") -> object:
    import asyncio

    from fintrack.core import blocklist
    from fintrack.core.db import open_pool
    from fintrack.core.streams import redis_client

    settings = _settings()

    async def call() -> object:
        pool = await open_pool(settings, max_size=1)
        redis = redis_client(settings)
        try:
            if action == "add":
                assert network is not None
                return await blocklist.add(
                    pool, redis, settings, network, reason=reason, actor="cli"
                )
            if action == "remove":
                assert network is not None
                return await blocklist.remove(pool, redis, settings, network)
            return await blocklist.load(pool)
        finally:
            await redis.aclose()
            await pool.close()

    try:
        return asyncio.run(call())
    except (SettingsError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@blocklist_app.command("add")
def blocklist_add(
    network: Annotated[str, typer.Argument(help="An IP address or CIDR range (v4 or v6).")],
    reason: Annotated[str, typer.Option(help="Why it is blocked (shown in decisions).")] = "",
) -> None:
    """Block an address or range; running workers pick it up within seconds."""
    typer.echo(f"blocked {_blocklist_call('add', network, reason)}")


@blocklist_app.command("remove")
def blocklist_remove(network: Annotated[str, typer.Argument()]) -> None:
    """Unblock an address or range."""
    if not _blocklist_call("remove", network):
        typer.echo(f"{network} is not on the blocklist", err=True)
        raise typer.Exit(1)
    typer.echo(f"unblocked {network}")


@blocklist_app.command("list")
def blocklist_list() -> None:
    """Print every blocked network, one per line with its reason."""
    from fintrack.core.blocklist import BlockedNetwork

    entries = _blocklist_call("list")
    assert isinstance(entries, list)
    for entry in entries:
        assert isinstance(entry, BlockedNetwork)
        typer.echo(f"{entry.network}\t{entry.reason}\t{entry.added_by}\t{entry.added_at}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
