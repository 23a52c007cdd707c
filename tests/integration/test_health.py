"""`fintrack health ROLE`: the container health check, run as the real CLI process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import RoleProcess, free_port, wait_until
from fintrack.cli import app
from fintrack.config import Settings
from fintrack.health import check_heartbeat, default_max_age_s, health_url


def health(
    role: str, settings: Settings, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run `fintrack health ROLE ARGS` with ``settings`` in its environment, as Docker would."""
    return subprocess.run(
        [sys.executable, "-m", "fintrack", "health", role, *args],
        env={**os.environ, **settings.to_env(), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def port_of(role_proc: RoleProcess) -> str:
    return role_proc.base_url.rsplit(":", 1)[1]


@pytest.mark.parametrize("role", ["api", "notifier"])
def test_http_role_healthy_while_running_unhealthy_once_stopped(
    role: str, settings: Settings, start_role: Callable[..., RoleProcess]
) -> None:
    """health api|notifier exits 0 while the role serves /health on its configured port, 1 after
    it stopped, and says why."""
    proc = start_role(role, settings)
    port_var = f"FINTRACK_{role.upper()}_PORT"

    up = health(role, settings, **{port_var: port_of(proc)})
    assert up.returncode == 0, up.stderr
    assert up.stdout.startswith(f"healthy: {role}:")

    assert proc.stop() == 0
    down = health(role, settings, **{port_var: port_of(proc)})
    assert down.returncode == 1
    assert down.stderr.startswith(f"unhealthy: {role}:")
    assert f"127.0.0.1:{port_of(proc)}/health" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_url_option_is_probed_instead_of_settings_port(
    settings: Settings, start_role: Callable[..., RoleProcess]
) -> None:
    """--url is what gets probed; a URL answering anything but 200 is unhealthy, naming the
    status."""
    proc = start_role("api", settings)
    unused = str(free_port())
    assert health("api", settings, FINTRACK_API_PORT=unused).returncode == 1
    probe = health("api", settings, "--url", f"{proc.base_url}/health", FINTRACK_API_PORT=unused)
    assert probe.returncode == 0, probe.stderr
    missing = health("api", settings, "--url", f"{proc.base_url}/no-such-path")
    assert missing.returncode == 1
    assert "answered 404" in missing.stderr


def test_worker_fresh_heartbeat_is_healthy(settings: Settings, tmp_path: Path) -> None:
    """health worker exits 0 when the heartbeat file was just touched."""
    beat = tmp_path / "worker.heartbeat"
    beat.touch()
    result = health("worker", settings, FINTRACK_WORKER_HEARTBEAT_FILE=str(beat))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("healthy: worker: heartbeat")


def test_running_worker_keeps_its_heartbeat_fresh(
    settings: Settings, start_role: Callable[..., RoleProcess], tmp_path: Path
) -> None:
    """A real worker process touches the heartbeat file, so health worker exits 0."""
    beat = tmp_path / "worker.heartbeat"
    start_role("worker", settings, FINTRACK_WORKER_HEARTBEAT_FILE=str(beat))
    wait_until(beat.exists, 30, "the worker's first heartbeat")
    os.utime(beat, (0, 0))  # make it stale; the loop must touch it again
    wait_until(lambda: beat.stat().st_mtime > 0, 10, "a fresh heartbeat")
    result = health("worker", settings, FINTRACK_WORKER_HEARTBEAT_FILE=str(beat))
    assert result.returncode == 0, result.stderr


def test_worker_stale_heartbeat_is_unhealthy(settings: Settings, tmp_path: Path) -> None:
    """A heartbeat older than the default limit (3 × max(block, 5 s)) exits 1 with its age."""
    beat = tmp_path / "worker.heartbeat"
    beat.touch()
    limit = default_max_age_s(settings)
    old = time.time() - limit - 5
    os.utime(beat, (old, old))
    result = health("worker", settings, FINTRACK_WORKER_HEARTBEAT_FILE=str(beat))
    assert result.returncode == 1
    assert "s old (limit 15 s)" in result.stderr
    assert str(beat) in result.stderr


def test_worker_max_age_option_sets_the_limit(settings: Settings, tmp_path: Path) -> None:
    """--max-age replaces the default limit in both directions."""
    beat = tmp_path / "worker.heartbeat"
    beat.touch()
    ten_s_ago = time.time() - 10
    os.utime(beat, (ten_s_ago, ten_s_ago))
    env = {"FINTRACK_WORKER_HEARTBEAT_FILE": str(beat)}
    assert health("worker", settings, **env).returncode == 0
    assert health("worker", settings, "--max-age", "5", **env).returncode == 1
    assert health("worker", settings, "--max-age", "60", **env).returncode == 0


def test_worker_missing_heartbeat_is_unhealthy(settings: Settings, tmp_path: Path) -> None:
    """No heartbeat file (the loop never ran) exits 1 and says so."""
    missing = tmp_path / "never-written"
    result = health("worker", settings, FINTRACK_WORKER_HEARTBEAT_FILE=str(missing))
    assert result.returncode == 1
    assert (
        result.stderr
        == f"unhealthy: worker: no heartbeat file at {missing}: the worker loop has not run\n"
    )


def test_worker_heartbeat_disabled_is_unhealthy(settings: Settings) -> None:
    """With the heartbeat switched off there is nothing to judge by: exit 1 naming the setting."""
    result = health("worker", settings, FINTRACK_WORKER_HEARTBEAT_FILE="")
    assert result.returncode == 1
    assert "FINTRACK_WORKER_HEARTBEAT_FILE is empty" in result.stderr


def test_bad_configuration_is_unhealthy_not_a_crash(settings: Settings) -> None:
    """A setting that does not parse exits 1 (unhealthy) with the variable's name, no traceback."""
    result = health("api", settings, FINTRACK_API_PORT="eighty")
    assert result.returncode == 1
    assert "FINTRACK_API_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_options_for_the_wrong_role_are_usage_errors() -> None:
    """--url on a worker and --max-age on the api are refused (exit 2), not silently ignored."""
    runner = CliRunner()
    assert runner.invoke(app, ["health", "worker", "--url", "http://x/health"]).exit_code == 2
    assert runner.invoke(app, ["health", "api", "--max-age", "5"]).exit_code == 2
    assert runner.invoke(app, ["health", "scheduler"]).exit_code == 2


def test_wildcard_bind_address_is_probed_on_loopback() -> None:
    """Containers bind 0.0.0.0 (or ::); the probe goes to loopback, a specific host stays."""
    assert health_url("api", Settings(api_host="0.0.0.0")) == "http://127.0.0.1:8001/health"
    assert health_url("notifier", Settings(notifier_host="::")) == "http://127.0.0.1:8002/health"
    assert health_url("api", Settings(api_host="10.0.0.5", api_port=9000)) == (
        "http://10.0.0.5:9000/health"
    )
    assert health_url("api", Settings(api_host="::1")) == "http://[::1]:8001/health"


def test_heartbeat_age_is_measured_from_mtime(tmp_path: Path) -> None:
    """The verdict compares now − mtime with the limit, exactly at the boundary too."""
    beat = tmp_path / "hb"
    beat.touch()
    os.utime(beat, (1_000.0, 1_000.0))
    assert check_heartbeat(str(beat), 15, now=1_015.0).ok
    assert not check_heartbeat(str(beat), 15, now=1_015.5).ok
