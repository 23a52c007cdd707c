"""OpenAPI pieces Litestar can't infer: the transaction bodies (read as raw bytes, to
accept any Content-Type and keep the amount's exact text) and the security schemes.
Limits in the document (text lengths, batch size) follow the settings of the app."""

from __future__ import annotations

from typing import Final

from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Parameter,
    RequestBody,
    Schema,
    SecurityScheme,
)

from fintrack.config import Settings
from fintrack.core.currencies import MINOR_UNITS
from fintrack.core.models import MAX_AMOUNT


def _short_text(max_length: int) -> Schema:
    return Schema(
        type=OpenAPIType.STRING, min_length=1, max_length=max_length, pattern=r"^[\w.@:+-]+$"
    )


def _places() -> str:
    by_places: dict[int, list[str]] = {}
    for code, places in sorted(MINOR_UNITS.items()):
        by_places.setdefault(places, []).append(code)
    groups = (f"{places}: {', '.join(codes)}" for places, codes in sorted(by_places.items()))
    return "; ".join(groups)


def transaction_schema(settings: Settings) -> Schema:
    """The body of ``POST /transactions`` as these settings validate it.

    One rule is not in the schema: an amount may have at most its currency's decimal
    places. JSON Schema can only say that with ``multipleOf`` on binary floats (0.01 is
    not exact), which validators and generators get wrong; the description says it.
    """
    return Schema(
        type=OpenAPIType.OBJECT,
        title="TransactionRequest",
        required=["amount", "source_ip"],
        additional_properties=False,
        properties={
            "amount": Schema(
                type=OpenAPIType.NUMBER,
                exclusive_minimum=0,
                maximum=float(MAX_AMOUNT),
                description="Exact decimal, with at most the currency's decimal places, "
                f"by number of places: {_places()}.",
            ),
            "source_ip": Schema(
                type=OpenAPIType.STRING,
                any_of=[Schema(format=OpenAPIFormat.IPV4), Schema(format=OpenAPIFormat.IPV6)],
                max_length=45,
            ),
            "txn_id": Schema(
                type=OpenAPIType.STRING,
                format=OpenAPIFormat.UUID,
                description="Client-chosen id for safe retries; generated when absent.",
            ),
            "user_id": _short_text(settings.max_text_length),
            "currency": Schema(
                type=OpenAPIType.STRING,
                enum=sorted(MINOR_UNITS),
                description=f"ISO 4217 code; {settings.default_currency} when absent.",
            ),
            "merchant_type": _short_text(settings.max_text_length),
            "status": Schema(type=OpenAPIType.STRING, enum=["PENDING"]),
        },
        examples=[
            {"amount": 200000, "source_ip": "12.34.56.78"},
            {
                "txn_id": "0b6f3c9e-8a36-4a8e-9a59-1b9d1c6f2b11",
                "user_id": "user_123",
                "amount": 150000.00,
                "currency": "INR",
                "merchant_type": "luxury_goods",
                "source_ip": "192.168.1.50",
                "status": "PENDING",
            },
        ],
    )


def batch_schema(settings: Settings) -> Schema:
    """The body of ``POST /transactions/batch``."""
    return Schema(
        type=OpenAPIType.ARRAY,
        # Any item is taken: one that is not a valid transaction gets an error result of
        # its own instead of failing the request.
        items=Schema(any_of=[transaction_schema(settings), Schema()]),
        max_items=settings.max_batch_items,
        description=f"At most {settings.max_batch_items} transactions "
        "(FINTRACK_MAX_BATCH_ITEMS); more is a 413.",
    )


def _json_body(schema: Schema, description: str) -> RequestBody:
    return RequestBody(
        content={"application/json": OpenAPIMediaType(schema=schema)},
        description=description,
        required=True,
    )


_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H = "[0-9a-fA-F]{1,4}"
_IPV6 = (
    "(?:"
    + "|".join(
        (
            rf"(?:{_H}:){{7}}{_H}",
            rf"(?:{_H}:){{1,7}}:",
            *(rf"(?:{_H}:){{1,{6 - n}}}(?::{_H}){{1,{n + 1}}}" for n in range(6)),
            rf":(?:(?::{_H}){{1,7}}|:)",
        )
    )
    + ")"
)
NETWORK_PATTERN: Final = (
    rf"^(?:{_IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?"
    rf"|{_IPV6}(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"
)


def network_schema() -> Schema:
    """An IPv4/IPv6 address or CIDR range. One rule is only in the description: a range's
    host bits must be zero (``10.0.0.0/8``, not ``10.0.0.1/8``)."""
    return Schema(
        type=OpenAPIType.STRING,
        pattern=NETWORK_PATTERN,
        max_length=64,
        description="An IP address or a CIDR range with its host bits zero.",
    )


def describe(openapi: OpenAPI, settings: Settings) -> None:
    """Complete the generated document where Litestar can't know better: the transaction
    bodies (read as raw bytes, to accept any Content-Type and keep the amount's exact
    text), the networks of the blocklist, admin bodies refusing unknown fields, and the
    text limit of the export's user filter."""
    paths = openapi.paths or {}
    submit = paths["/transactions"].post
    batch = paths["/transactions/batch"].post
    unblock = paths["/admin/blocklist/{network}"].delete
    assert submit is not None
    assert batch is not None
    assert unblock is not None
    submit.request_body = _json_body(
        transaction_schema(settings),
        "One transaction. Parsed as JSON whatever the Content-Type says.",
    )
    batch.request_body = _json_body(batch_schema(settings), "A JSON array of transactions.")
    for parameter in unblock.parameters or ():
        if isinstance(parameter, Parameter) and parameter.name == "network":
            parameter.schema = network_schema()
    export = paths["/transactions"].get
    assert export is not None
    for parameter in export.parameters or ():
        if isinstance(parameter, Parameter) and parameter.name == "user_id":
            assert isinstance(parameter.schema, Schema)
            parameter.schema.max_length = settings.max_text_length
    schemas = openapi.components.schemas if openapi.components else {}
    for name in ("NewBlock", "NewKey"):
        schemas[name].additional_properties = False
    network = schemas["NewBlock"].properties
    assert network is not None
    network["network"] = network_schema()


SECURITY: Final[list[dict[str, list[str]]]] = [{"bearer": []}, {"apiKey": []}]
COMPONENTS: Final = Components(
    security_schemes={
        "bearer": SecurityScheme(type="http", scheme="bearer"),
        "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
    }
)
