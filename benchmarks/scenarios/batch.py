"""(2) Batch ingest: POST /transactions/batch of ``batch_items`` transactions (wrk).

Ours: ``fintrack run api`` with ``batch_api_workers`` processes (1, the product's default).
The reference has no batch endpoint: a client of it sends one POST per transaction, so
its figure is the single-POST rate of scenario (1) (measured here if (1) did not run).
"""

from __future__ import annotations

import dataclasses

from benchmarks._context import Context
from benchmarks._report import Row, ScenarioResult
from benchmarks.scenarios.ingest import measure_post, reference_ingest, stream_length

NAME = "batch"
TARGET_TXN_PER_S = 50_000


def run(ctx: Context) -> ScenarioResult:
    o = ctx.options
    with ctx.scope():
        settings = dataclasses.replace(ctx.settings("batch"), http_workers=o.batch_api_workers)
        api = ctx.start_role("api", settings, "batch-api")
        ours = measure_post(ctx, api, batch_items=o.batch_items)
        ours["enqueued"] = stream_length(ctx, settings.txn_stream)
    ref = reference_ingest(ctx)
    rows = [
        Row(NAME, f"txn/s, {o.batch_items}/request, {o.batch_connections} conns, "
            f"{o.batch_api_workers} api process{'es' if o.batch_api_workers > 1 else ''}", "txn/s",
            ours["txn_per_s"], ref["req_per_s"], f">= {TARGET_TXN_PER_S:,}",
            ours["txn_per_s"] >= TARGET_TXN_PER_S and ours["errors"] == 0),
        Row(NAME, "request latency p99", "ms", ours["latency_ms"]["p99"],
            higher_is_better=False),
        Row(NAME, "server CPU per transaction", "us", ours["server_cpu_us_per_txn"],
            ref["server_cpu_us_per_txn"], higher_is_better=False),
        Row(NAME, "Redis CPU per transaction", "us", ours["redis_cpu_us_per_txn"],
            ref["redis_cpu_us_per_txn"], higher_is_better=False),
    ]  # fmt: skip
    return ScenarioResult(
        NAME, rows, {"ours": ours, "reference_single_post": ref, "items": o.batch_items}
    )
