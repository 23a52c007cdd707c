"""``python -m benchmarks [scenario ...]``: run the benchmark scenarios, print a table and
write ``bench-results/<timestamp>.json``. ``fintrack bench`` runs this from a checkout."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchmarks._context import Context, Options, open_context
from benchmarks._procs import raise_fd_limit
from benchmarks._report import ScenarioResult, render_table, write_json

SCENARIOS: dict[str, str] = {
    "ingest": "single POST /transactions, wrk at fixed concurrency",
    "batch": "POST /transactions/batch of 1000 items",
    "worker": "decided txn/s, 1 and 2 worker processes, all rules",
    "e2e": "open loop at fixed rates: submit -> 202, commit, SSE; then sustained",
    "fanout": "SSE: N clients x events/s on one notifier process",
    "connections": "api under load holding idle keep-alives; notifier with many SSE clients",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="FinTrack-Sentinel benchmarks against the plain reference service, "
        "on 127.0.0.1 only. Scenarios: "
        + "; ".join(f"{name}: {what}" for name, what in SCENARIOS.items()),
    )
    p.add_argument("scenarios", nargs="*", metavar="scenario", help="default: all, in order")
    p.add_argument("--quick", action="store_true", help="about 2 s per measurement")
    p.add_argument("--duration", type=float, help="seconds per measurement (default 10)")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="JSON directory")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"])
    p.add_argument("--http-workers", type=int, default=2, help="api/reference processes")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (ingest)")
    p.add_argument("--batch-items", type=int, default=1_000)
    p.add_argument("--batch-connections", type=int, default=8)
    p.add_argument("--batch-api-workers", type=int, default=1, help="api processes (batch)")
    p.add_argument("--e2e-rates", default="500,1000,3000", help="offered txn/s, comma-separated")
    p.add_argument("--e2e-api-workers", type=int, default=1, help="api/reference processes (e2e)")
    p.add_argument(
        "--sustained-s", type=float, help="seconds of the sustained e2e run (default 60; 0 skips)"
    )
    p.add_argument("--sustained-rate", type=int, default=3_000, help="txn/s (sustained e2e)")
    p.add_argument(
        "--sustained-users", type=int, default=100_000, help="distinct users (sustained e2e)"
    )
    p.add_argument("--fanout-clients", type=int, default=500)
    p.add_argument("--fanout-rate", type=int, default=200, help="events/s (fanout)")
    p.add_argument("--idle-connections", type=int, default=5_000)
    p.add_argument("--sse-clients", type=int, default=2_000)
    p.add_argument("--worker-count", type=int, default=0, help="txns per worker variant")
    p.add_argument(
        "--worker-users", type=int, default=1_000, help="distinct users (worker scenario)"
    )
    return p


def _options(args: argparse.Namespace) -> Options:
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 10.0)
    if duration <= 0:
        raise SystemExit("--duration must be positive")
    sustained = args.sustained_s if args.sustained_s is not None else (0.0 if args.quick else 60.0)
    if sustained < 0 or args.sustained_rate <= 0 or args.sustained_users <= 0:
        raise SystemExit(
            "--sustained-s must be 0 or more; --sustained-rate and --sustained-users positive"
        )
    return Options(
        duration_s=duration,
        quick=args.quick,
        log_level=args.log_level,
        http_workers=args.http_workers,
        connections=args.connections,
        batch_items=args.batch_items,
        batch_connections=args.batch_connections,
        batch_api_workers=args.batch_api_workers,
        e2e_rates=tuple(int(r) for r in args.e2e_rates.split(",") if r.strip()),
        e2e_api_workers=args.e2e_api_workers,
        sustained_s=sustained,
        sustained_rate=args.sustained_rate,
        sustained_users=args.sustained_users,
        fanout_clients=args.fanout_clients,
        fanout_rate=args.fanout_rate,
        idle_connections=args.idle_connections,
        sse_clients=args.sse_clients,
        worker_count=args.worker_count,
        worker_users=args.worker_users,
    )


def _runner(name: str) -> Callable[[Context], ScenarioResult]:
    module = importlib.import_module(f"benchmarks.scenarios.{name}")
    run: Callable[[Context], ScenarioResult] = module.run
    return run


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _missing_tools() -> list[str]:
    missing = [m for m in ("fastapi", "uvicorn", "psutil") if importlib.util.find_spec(m) is None]
    if shutil.which("wrk") is None:
        missing.append("wrk (apt-get install wrk)")
    return missing


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for name, what in SCENARIOS.items():
            print(f"{name:<12} {what}")
        return 0
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    missing = _missing_tools()
    if missing:
        print(f"missing: {', '.join(missing)} (dev dependencies: uv sync)", file=sys.stderr)
        return 2
    names = args.scenarios or list(SCENARIOS)
    options = _options(args)
    # SIGTERM (a timeout, a CI cancel) must still stop servers and drop the databases.
    signal.signal(signal.SIGTERM, _terminate)
    fd_limit = raise_fd_limit()
    needed = options.idle_connections + options.sse_clients + 1_000
    if "connections" in names and fd_limit < needed:
        print(
            f"open-files limit {fd_limit} < {needed} needed: raise it (ulimit -n)", file=sys.stderr
        )
        return 2
    started = time.time()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    results: list[ScenarioResult] = []
    with ExitStack() as stack:
        ctx = open_context(options, stack)
        print(f"fintrack bench: {', '.join(names)}; {ctx.servers_used}", file=sys.stderr)
        print(f"logs: {ctx.log_dir}", file=sys.stderr)
        for name in names:
            t0 = time.monotonic()
            print(f"-- {name}: {SCENARIOS[name]}", file=sys.stderr, flush=True)
            try:
                result = _runner(name)(ctx)
            except Exception as e:  # one broken scenario must not lose the others
                traceback.print_exc()
                result = ScenarioResult(name, error=str(e).splitlines()[0] if str(e) else repr(e))
            result.detail["scenario_wall_s"] = round(time.monotonic() - t0, 1)
            try:
                ctx.settle()
            except Exception as e:  # the scenarios after it will say what is down
                print(f"could not clear up after {name}: {e!r}", file=sys.stderr)
            results.append(result)
            print(render_table([result]), file=sys.stderr, flush=True)
        meta = {
            "options": {**options.__dict__, "e2e_rates": list(options.e2e_rates)},
            "services": ctx.servers_used,
            "run_id": ctx.run_id,
            "key_prefix": ctx.key_root,
            "logs": str(ctx.log_dir),
            "fd_limit": fd_limit,
            "load_average_at_start": load_at_start,
        }
        path = write_json(args.out, results, meta, started)
    print(render_table(results))
    print(f"\nwritten: {path}")
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
