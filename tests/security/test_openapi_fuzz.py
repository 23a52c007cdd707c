"""Schemathesis fuzzes the api and the notifier through their own OpenAPI documents
(served at /schema/openapi.json), against real server processes.

For every operation it sends schema-valid requests (which must be accepted) and invalid
ones (which must be refused with a 4xx) and checks every answer: no 5xx, a documented
status, content type and headers, a body matching the documented schema, and auth as
declared. Examples per operation and mode: 10 × FINTRACK_TEST_LOOPS.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from conftest import ADMIN_TOKEN, API_KEY, RoleProcess
from fintrack.config import Settings
from fintrack.core.currencies import MINOR_UNITS

LOOPS = int(os.environ.get("FINTRACK_TEST_LOOPS", "3"))
StartRole = Callable[..., RoleProcess]
# schemathesis's default answers that reject invalid input, plus 413: a batch over its
# maxItems is refused as too large, as the document says.
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"]
REJECTIONS += ["429", "5xx"]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}}
)


def _within_decimals(item: Any, default_currency: str) -> None:
    # The one rule of a transaction the document can only describe (ingest/openapi.py):
    # trim a generated amount to its currency's decimal places.
    if not isinstance(item, dict) or not isinstance(item.get("amount"), int | float):
        return
    places = MINOR_UNITS.get(item.get("currency", default_currency))
    if places is None or isinstance(item["amount"], bool):
        return
    unit = Decimal(1).scaleb(-places)
    exact = Decimal(repr(item["amount"])).quantize(unit, ROUND_DOWN)
    item["amount"] = float(max(exact, unit))


def _host_bits_zero(network: Any) -> Any:
    # The one rule of a blocklist network it can only describe: host bits are zero.
    try:
        return str(ipaddress.ip_network(network, strict=False))
    except (TypeError, ValueError):
        return network


def _make_valid(case: schemathesis.Case, default_currency: str) -> None:
    """Apply to a schema-valid case the rules the documents state in prose only."""
    items = case.body if isinstance(case.body, list) else [case.body]
    for item in items:
        _within_decimals(item, default_currency)
    if isinstance(case.body, dict) and "network" in case.body:
        case.body["network"] = _host_bits_zero(case.body["network"])
    if case.path_parameters and "network" in case.path_parameters:
        case.path_parameters["network"] = _host_bits_zero(case.path_parameters["network"])


def _exercise(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    base_url: str,
    headers: dict[str, str],
    fix: Callable[[schemathesis.Case], None],
) -> None:
    """Send the cases Hypothesis draws for ``operation`` in ``mode``; raise on a failure."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @hsettings(
        max_examples=10 * LOOPS,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(case: schemathesis.Case) -> None:
        if mode is GenerationMode.POSITIVE:
            fix(case)
        case.call_and_validate(base_url=base_url, headers=headers, timeout=30)

    run()


def _fuzz(
    base_url: str, token_for: Callable[[str], str], fix: Callable[[schemathesis.Case], None]
) -> list[str]:
    """Run every operation in both modes; the failures found, as readable reports."""
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json", config=CONFIG)
    failures = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations
    for operation in operations:
        headers = {"Authorization": f"Bearer {token_for(operation.path)}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _exercise(operation, mode, base_url, headers, fix)
            except Unsatisfiable:
                continue  # nothing to make invalid: the operation takes no input at all
            except (AssertionError, BaseExceptionGroup) as e:
                failures.append(f"{operation.label} [{mode.value}]: {e}")
    return failures


def test_api_conforms_to_its_openapi_document(start_role: StartRole, settings: Settings) -> None:
    """The api: no 5xx, every answer as documented, valid input taken, invalid refused."""
    api = start_role("api", settings)

    failures = _fuzz(
        api.base_url,
        lambda path: ADMIN_TOKEN if path.startswith("/admin") else API_KEY,
        lambda case: _make_valid(case, settings.default_currency),
    )

    assert not failures, "\n\n".join(failures)


def test_notifier_conforms_to_its_openapi_document(
    start_role: StartRole, settings: Settings
) -> None:
    """The notifier: the same, with feed streams cut short so each request ends."""
    notifier = start_role(
        "notifier", settings, FINTRACK_SSE_LIFETIME_S="0.2", FINTRACK_SSE_HEARTBEAT_S="0.1"
    )

    failures = _fuzz(notifier.base_url, lambda _: ADMIN_TOKEN, lambda _: None)

    assert not failures, "\n\n".join(failures)
