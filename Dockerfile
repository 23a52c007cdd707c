# syntax=docker/dockerfile:1.7
# One image for every role; the command picks it:
#   docker run IMAGE run api | run worker | run notifier | db migrate | lag ...
# Builder and runtime start from the same base so the venv's interpreter path
# (/usr/local/bin/python3.12) exists in both. Pin PYTHON_IMAGE to a digest in CI.
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS builder
ARG UV_VERSION=0.13.9
RUN --mount=type=cache,target=/root/.cache/pip pip install "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when uv.lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --no-editable --no-install-project

# Then the project itself, installed as a wheel (no-editable): the runtime needs no source tree.
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable


FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 fintrack \
    && useradd --system --uid 10001 --gid fintrack --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin fintrack
# Owned by root and read-only for the service user: the code cannot be changed at run time.
COPY --from=builder /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FINTRACK_API_HOST=0.0.0.0 \
    FINTRACK_NOTIFIER_HOST=0.0.0.0 \
    FINTRACK_LOG_FORMAT=json
# Scratch space that stays writable when the root filesystem is read-only (compose
# read_only + tmpfs, ECS readonlyRootFilesystem + a bind volume): the worker heartbeat
# lives here. ECS gives a task volume the owner and mode (1777) of this image directory.
VOLUME ["/tmp"]
WORKDIR /app
USER fintrack:fintrack
EXPOSE 8001 8002

# Checks the default role; compose and ECS set each role's own check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["fintrack", "health", "api"]
ENTRYPOINT ["fintrack"]
CMD ["run", "api"]
