"""OpenAPI pieces Litestar can't infer: the transaction bodies are read as raw bytes (to
accept any Content-Type and keep the amount's exact text), so their schemas are given here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from litestar.openapi.spec import (
    Components,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)

from fintrack.core.currencies import MINOR_UNITS
from fintrack.core.models import MAX_AMOUNT

_SHORT_TEXT = Schema(type=OpenAPIType.STRING, min_length=1, max_length=64, pattern=r"^[\w.@:+-]+$")

TRANSACTION: Final = Schema(
    type=OpenAPIType.OBJECT,
    title="TransactionRequest",
    required=["amount", "source_ip"],
    additional_properties=False,
    properties={
        "amount": Schema(
            type=OpenAPIType.NUMBER,
            exclusive_minimum=0,
            maximum=float(MAX_AMOUNT),
            multiple_of=0.0001,  # the finest any currency allows (CLF, UYW)
            description="Exact decimal, with at most the currency's decimal places "
            "(INR 2, JPY 0, KWD 3).",
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
        "user_id": _SHORT_TEXT,
        "currency": Schema(
            type=OpenAPIType.STRING,
            enum=sorted(MINOR_UNITS),
            description="ISO 4217 code; FINTRACK_DEFAULT_CURRENCY when absent.",
        ),
        "merchant_type": _SHORT_TEXT,
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

BATCH: Final = Schema(
    type=OpenAPIType.ARRAY,
    # Any item is taken: one that is not a valid transaction gets an error result of its
    # own instead of failing the request.
    items=Schema(any_of=[TRANSACTION, Schema()]),
    description="At most FINTRACK_MAX_BATCH_ITEMS transactions (default 1000).",
)


def _json_body(schema: Schema, description: str) -> RequestBody:
    return RequestBody(
        content={"application/json": OpenAPIMediaType(schema=schema)},
        description=description,
        required=True,
    )


@dataclass
class SubmitOperation(Operation):
    """``POST /transactions``: the body is read whatever its Content-Type."""

    def __post_init__(self) -> None:
        self.request_body = _json_body(
            TRANSACTION, "One transaction. Parsed as JSON whatever the Content-Type says."
        )


@dataclass
class BatchOperation(Operation):
    """``POST /transactions/batch``."""

    def __post_init__(self) -> None:
        self.request_body = _json_body(BATCH, "A JSON array of transactions.")


SECURITY: Final[list[dict[str, list[str]]]] = [{"bearer": []}, {"apiKey": []}]
COMPONENTS: Final = Components(
    security_schemes={
        "bearer": SecurityScheme(type="http", scheme="bearer"),
        "apiKey": SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header"),
    }
)
