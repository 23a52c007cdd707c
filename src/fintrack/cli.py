"""The ``fintrack`` command. Each role is imported lazily inside its command, so
``run api`` never loads the worker and ``--help`` stays fast."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Annotated, Any

import typer

from fintrack.config import Settings, SettingsError, hash_secret

app = typer.Typer(no_args_is_help=True, help="FinTrack-Sentinel: real-time fraud detection.")
run_app = typer.Typer(no_args_is_help=True, help="Run one role (or all of them).")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
blocklist_app = typer.Typer(no_args_is_help=True, help="Manage the IP blocklist.")
keys_app = typer.Typer(no_args_is_help=True, help="Issue, list and revoke API keys.")
app.add_typer(run_app, name="run")
app.add_typer(db_app, name="db")
app.add_typer(blocklist_app, name="blocklist")
app.add_typer(keys_app, name="keys")

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
        "fintrack.ingest.app:create_rsgi_app",
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.http_workers,
        kill_timeout_s=10,
        # Concurrent connections per worker. Granian's default (backlog / workers, 2,048)
        # leaves idle keep-alive connections beyond it unaccepted; a generous cap costs
        # only memory for connections actually held.
        backpressure=10_000,
        rsgi=True,
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
        # An open SSE stream counts as in flight: never wait longer than a stream lives
        # (SIGTERM ends the streams anyway), but give the shutdown itself time on a busy
        # host: with 1 s Granian killed the worker of a test notifier mid-shutdown.
        kill_timeout_s=max(5, min(30, int(settings.sse_lifetime_s))),
        # Every open SSE stream is a request in flight: leave room for the client limit.
        backpressure=settings.sse_max_clients + 256,
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


def _with_stores[T](work: Callable[[Any, Any, Settings], Awaitable[T]]) -> T:
    """Run ``work(pool, redis, settings)`` with a one-connection pool and a Redis client,
    closed afterwards; a bad setting or argument exits 2 with its message."""
    import asyncio

    from fintrack.core.db import open_pool
    from fintrack.core.errors import FieldError
    from fintrack.core.streams import redis_client

    settings = _settings()

    async def call() -> T:
        pool = await open_pool(settings, max_size=1)
        redis = redis_client(settings)
        try:
            return await work(pool, redis, settings)
        finally:
            await redis.aclose()
            await pool.close()

    try:
        return asyncio.run(call())
    except (SettingsError, FieldError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def _blocklist_call(action: str, network: str | None = None, reason: str = "") -> object:
    from fintrack.core import blocklist

    async def work(pool: Any, redis: Any, settings: Settings) -> object:
        if action == "add":
            assert network is not None
            return await blocklist.add(pool, redis, settings, network, reason=reason, actor="cli")
        if action == "remove":
            assert network is not None
            return await blocklist.remove(pool, redis, settings, network)
        return await blocklist.load(pool)

    return _with_stores(work)


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


# The audit trail names CLI actions as the admin API does.
_KEY_ACTIONS = {"add": "keys.create", "revoke": "keys.revoke", "list": "keys.list"}


def _keys_call(action: str, argument: str = "") -> object:
    from fintrack.core import apikeys, audit

    async def work(pool: Any, redis: Any, settings: Settings) -> object:
        result: object
        if action == "add":
            result = await apikeys.create(pool, redis, settings, argument, actor="cli")
            target = f"{result.id} {argument}"
        elif action == "revoke":
            result = await apikeys.revoke(pool, redis, settings, argument)
            target = argument if result is None else f"{argument} {result.name}"
        else:
            result, target = await apikeys.list_keys(pool), ""
        outcome = "not_found" if result is None else "ok"
        await audit.record(
            pool, actor="cli", action=_KEY_ACTIONS[action], target=target, remote="local",
            outcome=outcome,
        )  # fmt: skip
        return result

    return _with_stores(work)


@keys_app.command("add")
def keys_add(
    name: Annotated[str, typer.Argument(help="The client the key is for (its client id).")],
) -> None:
    """Issue a key; its secret is printed once, alone on standard output. Issue a second
    key with the same name to rotate, then revoke the old one."""
    from fintrack.core.apikeys import IssuedKey

    issued = _keys_call("add", name)
    assert isinstance(issued, IssuedKey)
    typer.echo(f"issued key {issued.id} for {issued.name}; the secret is shown once:", err=True)
    typer.echo(issued.secret)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (see `keys list`).")],
) -> None:
    """Revoke a key: every api process refuses it within FINTRACK_KEY_REFRESH_S."""
    if _keys_call("revoke", key_id) is None:
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@keys_app.command("list")
def keys_list() -> None:
    """Print every issued key: id, name, created, by whom, revoked (or "active")."""
    from fintrack.core.apikeys import ApiKey

    keys = _keys_call("list")
    assert isinstance(keys, list)
    for key in keys:
        assert isinstance(key, ApiKey)
        revoked = key.revoked_at or "active"
        typer.echo(f"{key.id}\t{key.name}\t{key.created_at}\t{key.created_by}\t{revoked}")


class HealthRole(StrEnum):
    api = "api"
    worker = "worker"
    notifier = "notifier"


@app.command("health")
def health(
    role: Annotated[HealthRole, typer.Argument(help="The role running in this container.")],
    url: Annotated[
        str | None,
        typer.Option(help="api/notifier: URL to GET instead of http://127.0.0.1:PORT/health."),
    ] = None,
    max_age: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            metavar="S",
            help="worker: oldest acceptable heartbeat in seconds "
            "(default 3 × max(FINTRACK_WORKER_BLOCK_MS, 5 s)).",
        ),
    ] = None,
) -> None:
    """Container health check: exit 0 if healthy, else 1 with one line saying why.

    api/notifier: GET /health answers 200 within 2 s. worker: the heartbeat file
    (FINTRACK_WORKER_HEARTBEAT_FILE) was touched recently."""
    if url is not None and role is HealthRole.worker:
        raise typer.BadParameter("applies to api and notifier only", param_hint="--url")
    if max_age is not None and role is not HealthRole.worker:
        raise typer.BadParameter("applies to worker only", param_hint="--max-age")
    from fintrack.health import check_role

    try:
        settings = Settings.from_env()
    except SettingsError as e:
        typer.echo(f"unhealthy: {role}: configuration error: {e}", err=True)
        raise typer.Exit(1) from None
    verdict = check_role(role.value, settings, url=url, max_age_s=max_age)
    if verdict.ok:
        typer.echo(f"healthy: {role}: {verdict.reason}")
        return
    typer.echo(f"unhealthy: {role}: {verdict.reason}", err=True)
    raise typer.Exit(1)


@app.command("lag")
def lag(
    watch: Annotated[
        float | None,
        typer.Option(min=1, metavar="S", help="Print a reading every S seconds until stopped."),
    ] = None,
    cloudwatch_namespace: Annotated[
        str | None,
        typer.Option(
            metavar="NS",
            help="Print CloudWatch Embedded Metric Format lines (metrics StreamLag, "
            "PendingEntries in namespace NS) for the awslogs driver to turn into metrics.",
        ),
    ] = None,
) -> None:
    """Print the fraud workers' backlog on the transactions stream as JSON:
    {"stream", "group", "lag", "pending"} (lag: not yet delivered; pending: unacked)."""
    from fintrack.lag import run

    settings = _settings()
    try:
        settings.require("redis_url")
    except SettingsError as e:
        typer.echo(f"configuration error: {e}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run(settings, watch_s=watch, namespace=cloudwatch_namespace))


@app.command("simulate")
def simulate(
    url: Annotated[
        str | None, typer.Option(help="The api's base URL (default http://127.0.0.1:API_PORT).")
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="FINTRACK_SIMULATE_API_KEY", help="Ingest API key, if auth is on."),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="FINTRACK_SIMULATE_ADMIN_TOKEN",
            help="Admin token, to put the networks the simulated attackers use "
            "(203.0.113.0/24, 2001:db8:bad::/48: documentation ranges) on the blocklist.",
        ),
    ] = None,
    rate: Annotated[float, typer.Option(min=0.01, help="Target transactions per second.")] = 100.0,
    duration: Annotated[
        float | None, typer.Option(min=0.01, help="Seconds to send for (default 10).")
    ] = None,
    count: Annotated[
        int | None, typer.Option(min=1, help="Transactions to send (with --duration: the fewer).")
    ] = None,
    users: Annotated[int, typer.Option(min=1, help="Distinct simulated users.")] = 500,
    fraud_share: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of transactions that are fraud.")
    ] = 0.1,
    seed: Annotated[
        int | None, typer.Option(help="Same seed, same transactions (txn_ids too).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="HTTP connections.")] = 32,
    settle: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for decisions after sending.")
    ] = 10.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Send realistic traffic (many users and currencies, a share of fraud: blocklisted
    IPs, velocity bursts, high-value luxury purchases) at a fixed rate, wait for every
    decision, and print what was caught. Exit 0 if every accepted transaction was decided."""
    import asyncio
    import random

    import msgspec

    from fintrack import simulate as sim

    try:
        settings = Settings.from_env()
    except SettingsError as e:
        typer.echo(f"configuration error: {e}", err=True)
        raise typer.Exit(2) from None
    options = sim.SimulationOptions(
        url=(url or f"http://127.0.0.1:{settings.api_port}").rstrip("/"),
        total=sim.total_transactions(rate, duration, count),
        rate=rate,
        seed=seed if seed is not None else random.SystemRandom().randrange(2**32),
        profile=sim.TrafficProfile(users=users, fraud_share=fraud_share),
        api_key=api_key,
        admin_token=admin_token,
        concurrency=concurrency,
        settle_s=settle,
        progress=sys.stderr.isatty(),
    )
    try:
        summary = asyncio.run(
            sim.run_simulation(options, warn=lambda m: typer.echo(f"warning: {m}", err=True))
        )
    except sim.SimulationError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    typer.echo(msgspec.json.encode(summary).decode() if json_output else sim.render_text(summary))
    raise typer.Exit(0 if summary.ok else 1)


@app.command(
    "bench",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Run the benchmark suite of this source checkout (loopback only).

    Compares every role with a plain reference service, prints a table and writes
    bench-results/<timestamp>.json; `fintrack bench --help` lists scenarios and options."""
    from fintrack.bench import exec_suite

    raise typer.Exit(exec_suite(list(ctx.args)))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
