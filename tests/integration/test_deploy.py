"""Deployment files: compose.yaml, the ECS task definitions, the Dockerfile and .dockerignore.

No Docker engine runs here, so the files are checked against the code they start: every
command parses with the real CLI, every FINTRACK_* name is a real setting, ports and stop
timeouts agree with the code's defaults and drain bounds, and the Dockerfile's install steps
are replayed with uv outside Docker.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from fintrack.cli import app
from fintrack.config import Settings
from fintrack.core.auth import identify
from fintrack.core.streams import TXN_GROUP
from fintrack.fraud.worker import STOP_GRACE_S

ROOT = Path(__file__).resolve().parents[2]
TASKDEFS = ROOT / "deploy" / "ecs-taskdefs"
ROLES = ("api", "worker", "notifier", "migrate")
ROLE_COMMANDS = {
    "api": ["run", "api"],
    "worker": ["run", "worker"],
    "notifier": ["run", "notifier"],
    "migrate": ["db", "migrate"],
}
SETTINGS_VARS = frozenset(Settings().to_env())
DEFAULTS = Settings()
SECRET_NAME = re.compile(r"(URL|KEYS?|TOKENS?|PASSWORDS?|SECRETS?)$", re.IGNORECASE)
SECRET_SETTINGS = (
    "FINTRACK_DATABASE_URL",
    "FINTRACK_REDIS_URL",
    "FINTRACK_API_KEYS",
    "FINTRACK_ADMIN_TOKENS",
)
SESSION_SECRET = "FINTRACK_SESSION_SECRET"  # the notifier's alone: it signs sign-in cookies
NOTIFIER_SECRETS = frozenset(
    {"FINTRACK_DATABASE_URL", "FINTRACK_REDIS_URL", "FINTRACK_ADMIN_TOKENS", SESSION_SECRET}
)

# How long each role may take to stop after SIGTERM, from the code: Granian's kill timeout
# for the api (cli.run_api) plus a `Prefer: wait` request still in flight; the worker's stop
# grace plus a slow batch commit; the notifier's Granian kill timeout min(30, sse_lifetime_s)
# and, at worst, an SSE response that lives its whole lifetime.
API_DRAIN_S = 10 + DEFAULTS.max_wait_ms / 1000
WORKER_DRAIN_S = STOP_GRACE_S + 20
FARGATE_MAX_STOP_S = 120

# Valid Fargate task sizes: cpu units -> memory MiB allowed.
FARGATE_SIZES: dict[int, range] = {
    256: range(512, 2049, 512),
    512: range(1024, 4097, 1024),
    1024: range(2048, 8193, 1024),
    2048: range(4096, 16385, 1024),
    4096: range(8192, 30721, 1024),
    8192: range(16384, 61441, 4096),
    16384: range(32768, 122881, 8192),
}


# ---------------------------------------------------------------- helpers


def parse_cli(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse ``fintrack ARGS`` with the real CLI without running it: the command's path
    (``["run", "api"]``) and its parameters. Raises the CLI's usage error when a command,
    argument or option does not exist or a value does not fit."""
    command = typer.main.get_command(app)
    ctx = command.make_context("fintrack", [], resilient_parsing=True)
    path: list[str] = []
    rest = list(args)
    while hasattr(command, "get_command"):  # a command group: descend by name
        assert rest, f"`fintrack {shlex.join(args)}` names a group, not a command"
        name, *rest = rest
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`fintrack {shlex.join(args)}`: no command {name!r}"
        command, path = sub, [*path, name]
        if hasattr(command, "get_command"):
            ctx = command.make_context(name, [], parent=ctx, resilient_parsing=True)
        else:
            ctx = command.make_context(name, rest, parent=ctx)
    return path, dict(ctx.params)


def assert_cli_command(args: list[str]) -> None:
    """``fintrack ARGS`` names a real command (its --help works) and ARGS parse."""
    path, _ = parse_cli(args)
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, f"fintrack {shlex.join(path)} --help: {result.output}"


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def fintrack_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose()["services"]
    return {name: s for name, s in services.items() if name in ROLES}


def taskdef(role: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TASKDEFS / f"{role}.json").read_text())
    return data


def role_container(role: str) -> dict[str, Any]:
    (container,) = [c for c in taskdef(role)["containerDefinitions"] if c["name"] == role]
    return container


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", [])}


def seconds(duration: str) -> float:
    """A compose duration like ``90s`` or ``1m30s`` in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def interpolated_name(value: str) -> str | None:
    """``VAR`` when value is exactly ``${VAR...}``, else None."""
    match = re.fullmatch(r"\$\{([A-Z_][A-Z0-9_]*)[^}]*\}", value)
    return match.group(1) if match else None


# ---------------------------------------------------------------- compose.yaml


def test_compose_services_run_one_image_with_real_commands() -> None:
    """Every fintrack service uses the one image and a command the CLI accepts; so do the
    health checks."""
    services = fintrack_services()
    assert set(services) == set(ROLES)
    for name, service in services.items():
        assert service["image"] == "fintrack-sentinel:local", name
        assert service["build"] == {"context": "."}, name
        assert service["command"] == ROLE_COMMANDS[name], name
        assert_cli_command(service["command"])
        if name == "migrate":
            assert service["healthcheck"] == {"disable": True}
        else:
            test = service["healthcheck"]["test"]
            assert test == ["CMD", "fintrack", "health", name]
            assert_cli_command(test[2:])


def test_compose_sets_only_real_settings() -> None:
    """Every FINTRACK_* variable compose sets is a Settings field; secrets are required from
    .env (compose refuses to start without them) and auth is on unless overridden."""
    for name, service in fintrack_services().items():
        env = service["environment"]
        names = {k for k in env if k.startswith("FINTRACK_")}
        assert names <= SETTINGS_VARS, f"{name}: unknown settings {names - SETTINGS_VARS}"
        assert set(SECRET_SETTINGS) <= names, name
        for var in ("FINTRACK_API_KEYS", "FINTRACK_ADMIN_TOKENS"):
            assert interpolated_name(env[var]) == var
            assert env[var].startswith(f"${{{var}:?"), f"{var} must be required"
        assert "${POSTGRES_PASSWORD:?" in env["FINTRACK_DATABASE_URL"]
        assert env["FINTRACK_INSECURE_OPEN"] == "${FINTRACK_INSECURE_OPEN:-false}"
        if name == "notifier":
            assert interpolated_name(env[SESSION_SECRET]) == SESSION_SECRET
            assert env[SESSION_SECRET].startswith(f"${{{SESSION_SECRET}:?"), "must be required"
        else:
            assert SESSION_SECRET not in env, f"{name} has no use for the session secret"


def test_compose_ports_match_settings_defaults() -> None:
    """The api and notifier publish the settings' default ports, on the host's loopback only."""
    services = fintrack_services()
    assert services["api"]["ports"] == [f"127.0.0.1:{DEFAULTS.api_port}:{DEFAULTS.api_port}"]
    assert services["notifier"]["ports"] == [
        f"127.0.0.1:{DEFAULTS.notifier_port}:{DEFAULTS.notifier_port}"
    ]
    for name in ("api", "notifier"):
        assert not {"FINTRACK_API_PORT", "FINTRACK_NOTIFIER_PORT"} & set(
            services[name]["environment"]
        ), "the ports come from the settings defaults"
    for infra in ("postgres", "redis"):
        assert "ports" not in compose()["services"][infra], f"{infra} must not be published"


def test_compose_workers_scale() -> None:
    """Workers run 3 replicas by default and have nothing fixed that `--scale` would clash on."""
    worker = fintrack_services()["worker"]
    assert worker["deploy"]["replicas"] == 3
    assert "ports" not in worker
    assert "container_name" not in worker
    assert "hostname" not in worker


def test_compose_infrastructure_and_migration_order() -> None:
    """Postgres 16 and Redis 7 (AOF, fsync every second) with health checks and volumes; the
    roles start after a successful one-shot migration and healthy datastores."""
    doc = compose()
    postgres, redis = doc["services"]["postgres"], doc["services"]["redis"]
    assert postgres["image"].startswith("postgres:16")
    assert redis["image"].startswith("redis:7")
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"
    for infra in (postgres, redis):
        assert infra["healthcheck"]["test"]
        (volume,) = infra["volumes"]
        assert volume.split(":")[0] in doc["volumes"]

    services = fintrack_services()
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("api", "notifier", "worker"):
        assert services[name]["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name


def test_compose_grace_periods_match_ecs_stop_timeouts() -> None:
    """Compose gives each role as long to drain as ECS does."""
    services = fintrack_services()
    for role in ("api", "notifier", "worker"):
        grace = seconds(services[role]["stop_grace_period"])
        assert grace == role_container(role)["stopTimeout"], role
    notifier_env = services["notifier"]["environment"]
    assert (
        notifier_env["FINTRACK_SSE_LIFETIME_S"]
        == env_of(role_container("notifier"))["FINTRACK_SSE_LIFETIME_S"]
    )


def test_env_example_configures_valid_settings() -> None:
    """.env.example's entries parse as Settings and match the documented example secrets."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    assert {
        "FINTRACK_API_KEYS",
        "FINTRACK_ADMIN_TOKENS",
        "FINTRACK_SESSION_SECRET",
        "POSTGRES_PASSWORD",
    } <= set(values)
    assert values["FINTRACK_INSECURE_OPEN"] == "false"
    settings = Settings.from_env({k: v for k, v in values.items() if k.startswith("FINTRACK_")})
    assert settings.auth_enabled
    assert identify("demo-acme-key-change-me", settings.api_key_hashes) == "acme"
    assert identify("demo-admin-token-change-me", settings.admin_token_hashes) == "alice"
    assert settings.session_secret  # and long enough: Settings refuses a short one


# ---------------------------------------------------------------- ECS task definitions


@pytest.mark.parametrize("role", ROLES)
def test_taskdef_has_required_fargate_fields(role: str) -> None:
    """Family, Fargate + awsvpc, a valid cpu/memory pair, an execution role, and awslogs with a
    stream prefix on every container."""
    td = taskdef(role)
    assert td["family"] == f"fintrack-{role}"
    assert td["requiresCompatibilities"] == ["FARGATE"]
    assert td["networkMode"] == "awsvpc"
    cpu, memory = int(td["cpu"]), int(td["memory"])
    assert memory in FARGATE_SIZES[cpu], f"{role}: {cpu} CPU units cannot have {memory} MiB"
    assert td["executionRoleArn"].startswith("arn:aws:iam::")
    assert td["containerDefinitions"]
    for container in td["containerDefinitions"]:
        assert container["name"]
        assert container["image"]
        assert isinstance(container["essential"], bool)
        logs = container["logConfiguration"]
        assert logs["logDriver"] == "awslogs"
        assert logs["options"]["awslogs-stream-prefix"]
        assert logs["options"]["awslogs-group"]
    assert role_container(role)["essential"] is True


@pytest.mark.parametrize("role", ROLES)
def test_taskdef_keeps_secrets_out_of_environment(role: str) -> None:
    """No secret-looking variable is inline; secrets come from SSM/Secrets Manager ARNs."""
    for container in taskdef(role)["containerDefinitions"]:
        inline = [name for name in env_of(container) if SECRET_NAME.search(name)]
        assert not inline, f"{role}/{container['name']}: inline secrets {inline}"
        for secret in container.get("secrets", []):
            assert SECRET_NAME.search(secret["name"]), secret["name"]
            assert re.match(r"arn:aws:(ssm|secretsmanager):", secret["valueFrom"]), secret
    names = {s["name"] for s in role_container(role).get("secrets", [])}
    assert "FINTRACK_DATABASE_URL" in names
    if role != "migrate":
        assert "FINTRACK_REDIS_URL" in names
    if role == "api":
        assert names == set(SECRET_SETTINGS)
    if role == "notifier":
        assert names == NOTIFIER_SECRETS
    else:
        assert SESSION_SECRET not in names, f"{role} has no use for the session secret"


@pytest.mark.parametrize("role", ROLES)
def test_taskdef_uses_real_settings_and_commands(role: str) -> None:
    """Every FINTRACK_* name in a task definition is a Settings field, every command parses."""
    for container in taskdef(role)["containerDefinitions"]:
        names = set(env_of(container)) | {s["name"] for s in container.get("secrets", [])}
        assert names <= SETTINGS_VARS, f"{role}: unknown settings {names - SETTINGS_VARS}"
        Settings.from_env(env_of(container))  # the values parse too
        assert_cli_command(container["command"])
    assert role_container(role)["command"] == ROLE_COMMANDS[role]


@pytest.mark.parametrize("role", ["api", "worker", "notifier"])
def test_taskdef_health_check_runs_the_role_probe(role: str) -> None:
    """The health check is `fintrack health ROLE` (no curl in the image), within ECS limits."""
    check = role_container(role)["healthCheck"]
    assert check["command"] == ["CMD", "fintrack", "health", role]
    assert_cli_command(check["command"][2:])
    assert 5 <= check["interval"] <= 300
    assert 2 <= check["timeout"] <= 60
    assert check["timeout"] < check["interval"]
    assert 1 <= check["retries"] <= 10
    assert 0 <= check["startPeriod"] <= 300


def test_taskdef_stop_timeouts_cover_drain() -> None:
    """stopTimeout exceeds each role's drain bound and stays within Fargate's 120 s."""
    api = role_container("api")
    assert API_DRAIN_S < api["stopTimeout"] <= FARGATE_MAX_STOP_S

    worker = role_container("worker")
    assert WORKER_DRAIN_S < worker["stopTimeout"] <= FARGATE_MAX_STOP_S

    notifier = role_container("notifier")
    settings = Settings.from_env(env_of(notifier))
    assert settings.sse_lifetime_s == 60
    granian_kill_s = max(1, min(30, int(settings.sse_lifetime_s)))
    assert max(settings.sse_lifetime_s, granian_kill_s) < notifier["stopTimeout"]
    assert notifier["stopTimeout"] <= FARGATE_MAX_STOP_S

    for role in ROLES:
        for container in taskdef(role)["containerDefinitions"]:
            assert container.get("stopTimeout", 30) <= FARGATE_MAX_STOP_S


@pytest.mark.parametrize("role", ["api", "notifier"])
def test_http_taskdef_ports_and_file_limits(role: str) -> None:
    """HTTP roles expose the settings port, bind all interfaces, and raise nofile explicitly."""
    container = role_container(role)
    settings = Settings.from_env(env_of(container))
    port = settings.api_port if role == "api" else settings.notifier_port
    assert port == getattr(DEFAULTS, f"{role}_port")
    assert [m["containerPort"] for m in container["portMappings"]] == [port]
    assert getattr(settings, f"{role}_host") == "0.0.0.0"
    (nofile,) = [u for u in container["ulimits"] if u["name"] == "nofile"]
    assert nofile["softLimit"] >= 65535
    assert nofile["hardLimit"] >= nofile["softLimit"]


@pytest.mark.parametrize("role", ROLES)
def test_taskdef_hardening(role: str) -> None:
    """Read-only root filesystem with a writable /tmp volume and an init process, everywhere."""
    td = taskdef(role)
    volumes = {v["name"] for v in td.get("volumes", [])}
    for container in td["containerDefinitions"]:
        assert container["readonlyRootFilesystem"] is True
        mounts = {m["containerPath"]: m["sourceVolume"] for m in container["mountPoints"]}
        assert mounts["/tmp"] in volumes
        assert container["linuxParameters"]["initProcessEnabled"] is True


def test_scaling_policy_tracks_the_metric_the_sidecar_publishes() -> None:
    """The worker's lag sidecar publishes the metric the target-tracking policy scales on."""
    (sidecar,) = [c for c in taskdef("worker")["containerDefinitions"] if c["name"] != "worker"]
    assert sidecar["essential"] is False
    _, params = parse_cli(sidecar["command"])
    assert 0 < params["watch"] <= 60  # at least one reading a minute
    namespace = params["cloudwatch_namespace"]
    settings = Settings.from_env(env_of(sidecar))

    policy = json.loads((TASKDEFS / "worker-scaling-policy.json").read_text())
    assert policy["TargetValue"] > 0
    metrics = {m["Id"]: m for m in policy["CustomizedMetricSpecification"]["Metrics"]}
    lag = metrics["lag"]["MetricStat"]["Metric"]
    assert lag["Namespace"] == namespace
    assert lag["MetricName"] == "StreamLag"
    assert {d["Name"]: d["Value"] for d in lag["Dimensions"]} == {
        "Stream": settings.txn_stream,
        "Group": TXN_GROUP,
    }
    returned = [m for m in metrics.values() if m.get("ReturnData", True)]
    assert len(returned) == 1
    assert "lag" in returned[0]["Expression"]


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            result.append((instruction.upper(), " ".join(args.split())))
    return result


def test_dockerfile_is_multistage_nonroot_and_locked() -> None:
    """Builder and slim runtime from one base, uv sync --locked --no-dev in two layers,
    a non-root user, the fintrack entrypoint, a curl-free health check, container binds."""
    steps = dockerfile_instructions()
    froms = [args for ins, args in steps if ins == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"]
    assert ("ARG", "PYTHON_IMAGE=python:3.12-slim") in steps

    runs = [args for ins, args in steps if ins == "RUN"]
    syncs = [r for r in runs if "uv sync" in r]
    assert len(syncs) == 2
    assert all("--locked --no-dev --no-editable" in s for s in syncs)
    assert all("--mount=type=cache,target=/root/.cache/uv" in s for s in syncs)
    assert "--no-install-project" in syncs[0]
    assert "--no-install-project" not in syncs[1]
    assert any("pip install" in r and "uv" in r for r in runs)
    envs = " ".join(args for ins, args in steps if ins == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in envs
    assert "UV_LINK_MODE=copy" in envs
    assert "FINTRACK_API_HOST=0.0.0.0" in envs
    assert "FINTRACK_NOTIFIER_HOST=0.0.0.0" in envs
    for name in re.findall(r"\b(FINTRACK_[A-Z_]+)=", envs):
        assert name in SETTINGS_VARS

    runtime = steps[[i for i, (ins, _) in enumerate(steps) if ins == "FROM"][1] :]
    (user,) = [args for ins, args in runtime if ins == "USER"]
    assert user.split(":")[0] not in {"root", "0"}
    assert ("COPY", "--from=builder /app/.venv /app/.venv") in runtime
    assert ("ENTRYPOINT", '["fintrack"]') in runtime
    assert ("CMD", '["run", "api"]') in runtime
    (check,) = [args for ins, args in runtime if ins == "HEALTHCHECK"]
    assert check.endswith('CMD ["fintrack", "health", "api"]')
    assert "curl" not in check


def test_dockerignore_allows_only_the_build_inputs() -> None:
    """The build context is an allow-list: what the Dockerfile copies, never .env or .git."""
    lines = [
        line
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "uv.lock", "README.md", "src"}
    copied = set()
    for ins, args in dockerfile_instructions():
        if ins == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            copied |= {s.rstrip("/") for s in sources}
    assert copied <= allowed


def uv_executable() -> str:
    # `uv run` tells its children where uv is; PATH may hold a pyenv shim named uv instead.
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.skip("uv is not installed")
    return uv


@pytest.mark.slow
def test_locked_install_runs_outside_docker(tmp_path: Path) -> None:
    """The Dockerfile's two `uv sync --locked --no-dev --no-editable` steps build a venv whose
    fintrack CLI runs, without dev tools and without the source tree."""
    uv = uv_executable()
    project = tmp_path / "app"
    venv = tmp_path / "venv"
    project.mkdir()
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, project / name)
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "UV_PROJECT"}}
    env |= {
        "UV_PROJECT_ENVIRONMENT": str(venv),
        "UV_COMPILE_BYTECODE": "0",  # the image compiles; here it would only cost time
        "UV_LINK_MODE": "copy",
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_PYTHON": sys.executable,  # uv builds the venv on this interpreter's base
    }
    sync = [uv, "sync", "--locked", "--no-dev", "--no-editable"]

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd, cwd=project, env=env, capture_output=True, text=True, timeout=240, check=False
        )

    deps = run(*sync, "--no-install-project")  # only pyproject.toml and uv.lock present
    assert deps.returncode == 0, deps.stderr
    shutil.copy(ROOT / "README.md", project / "README.md")
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))
    full = run(*sync)
    assert full.returncode == 0, full.stderr

    shutil.rmtree(project / "src")  # no-editable: the venv must not need the source
    fintrack = venv / "bin" / "fintrack"
    assert run(str(fintrack), "--help").returncode == 0
    beat = tmp_path / "no-heartbeat"
    probe = subprocess.run(
        [str(fintrack), "health", "worker"],
        env={**env, "FINTRACK_WORKER_HEARTBEAT_FILE": str(beat)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert probe.returncode == 1
    assert (
        probe.stderr
        == f"unhealthy: worker: no heartbeat file at {beat}: the worker loop has not run\n"
    )
    where = run(
        str(venv / "bin" / "python"), "-c", "import fintrack, sys; print(fintrack.__file__)"
    )
    assert Path(where.stdout.strip()).is_relative_to(venv), "fintrack is not installed in the venv"
    assert not list(venv.glob("lib/python*/site-packages/pytest")), "dev dependencies installed"
    home = (venv / "pyvenv.cfg").read_text()
    assert str(ROOT) not in home, "the venv must stand on a base interpreter, not on .venv"
