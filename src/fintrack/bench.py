"""``fintrack bench``: run the benchmark suite of a source checkout.

The suite (``benchmarks/``) is not part of the installed package: it needs wrk, the dev
dependencies (FastAPI, uvicorn for the reference service, psutil) and the repository's
files. This finds the checkout that contains the current directory and runs
``python -m benchmarks`` there, with the same arguments.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

SUITE = Path("benchmarks") / "__main__.py"


def find_checkout(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding ``benchmarks/__main__.py`` and a
    ``pyproject.toml``; None outside a checkout."""
    for directory in (start, *start.parents):
        if (directory / SUITE).is_file() and (directory / "pyproject.toml").is_file():
            return directory
    return None


def exec_suite(args: list[str], start: Path | None = None) -> int:
    """Replace this process with ``python -m benchmarks ARGS`` run from the checkout root.

    Returns 2 (with an explanation on stderr) only when no checkout is found. Relative
    paths in ``args`` (``--out``) are relative to the checkout root.
    """
    root = find_checkout((start or Path.cwd()).resolve())
    if root is not None:
        _replace_process(root, args)
    print(
        "fintrack bench runs the benchmark suite of a source checkout: run it inside "
        "the repository (where benchmarks/ is), e.g. `uv run fintrack bench --quick`, "
        "or there `uv run python -m benchmarks`.",
        file=sys.stderr,
    )
    return 2


def _replace_process(root: Path, args: list[str]) -> NoReturn:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    os.chdir(root)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *args], env)  # noqa: S606
