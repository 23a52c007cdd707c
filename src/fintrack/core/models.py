"""The transaction as clients send it, and as it travels through the system.

``TransactionRequest`` is the wire shape a client posts. ``validate_request`` turns it into
a ``Transaction``: exact money, a known currency, a real IP address, an id. Everything
downstream (stream entries, the worker, PostgreSQL) only ever sees ``Transaction``.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

import msgspec

from fintrack.config import TEXT_CEILING
from fintrack.core.currencies import MINOR_UNITS
from fintrack.core.errors import FieldError

# Bounds. A transaction above MAX_AMOUNT is not a payment, it is an attack or a bug.
MAX_AMOUNT = Decimal("1000000000000")  # 10^12 major units
MAX_AMOUNT_TEXT = 40  # characters of the JSON number literal
# `(?!\n)`: in Python's `re` a bare `$` also matches before a final newline, which would let
# "user_1\n" through (log and key injection); ECMA regexes (OpenAPI) read it the same way.
# The length bound here is the ceiling; the api enforces FINTRACK_MAX_TEXT_LENGTH (default 64).
USER_ID_PATTERN = r"^[\w.@:+-]+$(?!\n)"
ShortText = Annotated[
    str, msgspec.Meta(min_length=1, max_length=TEXT_CEILING, pattern=USER_ID_PATTERN)
]

Status = Literal["PENDING", "APPROVED", "FLAGGED", "BLOCKED", "FAILED"]
FINAL_STATUSES: tuple[Status, ...] = ("APPROVED", "FLAGGED", "BLOCKED", "FAILED")


class TransactionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /transactions``. Only ``amount`` and ``source_ip`` are required."""

    amount: msgspec.Raw  # kept raw so the number's exact text becomes a Decimal
    source_ip: Annotated[str, msgspec.Meta(min_length=2, max_length=45)]
    txn_id: uuid.UUID | None = None
    user_id: ShortText | None = None
    currency: Annotated[str, msgspec.Meta(min_length=1, max_length=8)] | None = None
    merchant_type: ShortText | None = None
    status: Literal["PENDING"] = "PENDING"


class Transaction(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """A validated transaction, as enqueued for the fraud workers.

    ``received_at_ms`` is the api's clock when it accepted the transaction: the event time
    that velocity windows are measured in. ``client_id`` is the API client that sent it.
    """

    txn_id: uuid.UUID
    user_id: str
    amount: Decimal
    currency: str
    merchant_type: str
    source_ip: str
    client_id: str
    received_at_ms: int


class Defaults(msgspec.Struct, frozen=True):
    """What fills the optional fields a client leaves out (documented in the README)."""

    currency: str = "INR"
    user_id: str = "anonymous"
    merchant_type: str = "general"


def validate_request(
    req: TransactionRequest, *, client_id: str, received_at_ms: int, defaults: Defaults
) -> Transaction:
    """Check what msgspec's schema can't express; raise ``FieldError`` naming the field."""
    currency = req.currency if req.currency is not None else defaults.currency
    if currency not in MINOR_UNITS:
        raise FieldError("currency", f"{currency!r} is not an ISO 4217 currency code")
    return Transaction(
        txn_id=req.txn_id if req.txn_id is not None else uuid.uuid4(),
        user_id=req.user_id if req.user_id is not None else defaults.user_id,
        amount=parse_amount(bytes(req.amount), currency),
        currency=currency,
        merchant_type=(
            req.merchant_type if req.merchant_type is not None else defaults.merchant_type
        ),
        source_ip=parse_ip(req.source_ip),
        client_id=client_id,
        received_at_ms=received_at_ms,
    )


def parse_amount(raw: bytes, currency: str) -> Decimal:
    """A JSON number literal → a positive Decimal with at most the currency's decimals."""
    text = raw.decode("utf-8", "replace").strip()
    if not text or text[0] not in "-0123456789" or len(text) > MAX_AMOUNT_TEXT:
        raise FieldError("amount", "must be a JSON number, e.g. 150000.00")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise FieldError("amount", "must be a JSON number, e.g. 150000.00") from None
    if not amount.is_finite():
        raise FieldError("amount", "must be finite")
    if amount <= 0:
        raise FieldError("amount", "must be greater than zero")
    if amount > MAX_AMOUNT:
        raise FieldError("amount", f"must not exceed {MAX_AMOUNT:,}")
    places = MINOR_UNITS[currency]
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite, checked above
    if -exponent > places and amount != amount.quantize(Decimal(1).scaleb(-places)):
        raise FieldError("amount", f"{currency} allows at most {places} decimal places")
    # One canonical form per value: 150000, 150000.0 and 150000.00 are the same payment.
    return amount.quantize(Decimal(1).scaleb(-places))


# A dotted quad without leading zeros: exactly the IPv4 texts `ipaddress` accepts, and
# already canonical. Matching it costs a tenth of parsing it (most addresses are IPv4).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def parse_ip(text: str) -> str:
    """A valid IPv4 or IPv6 address in its canonical (compressed) form."""
    if _CANONICAL_IPV4.fullmatch(text):
        return text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise FieldError("source_ip", f"{text[:45]!r} is not an IPv4 or IPv6 address") from None
    # `fe80::1%eth0` parses, but a zone id is local to the sender's host and PostgreSQL's
    # inet type refuses it: the worker could never store the transaction.
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise FieldError("source_ip", "must not carry an IPv6 zone id (%...)")
    return str(address)


# Codecs are built once and reused: constructing them per message is measurable.
transaction_encoder = msgspec.json.Encoder()
transaction_decoder = msgspec.json.Decoder(Transaction)
request_decoder = msgspec.json.Decoder(TransactionRequest)
