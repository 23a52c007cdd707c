"""FinTrack-Sentinel benchmark suite: ``uv run python -m benchmarks [scenario ...]``.

Every scenario starts what it needs on 127.0.0.1, measures for a bounded time, and runs
the plain reference service (``benchmarks.reference``) in the same invocation, so the
ratios compare like with like on whatever machine runs them. See docs/performance.md.
"""
