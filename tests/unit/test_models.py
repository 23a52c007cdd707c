"""The transaction model: exact money, canonical forms, refusals, lossless encoding."""

from __future__ import annotations

import ipaddress
import uuid
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fintrack.config import Settings
from fintrack.core.currencies import MINOR_UNITS
from fintrack.core.errors import FieldError
from fintrack.core.models import (
    MAX_AMOUNT,
    Defaults,
    Transaction,
    parse_ip,
    request_decoder,
    transaction_decoder,
    transaction_encoder,
    validate_request,
)
from fintrack.ingest.state import defaults_from

CURRENCIES = sorted(MINOR_UNITS)
SHORT_TEXT = r"[\w.@:+-]{1,64}"


def _validate(body: bytes, defaults: Defaults | None = None) -> Transaction:
    return validate_request(
        request_decoder.decode(body),
        client_id="acme",
        received_at_ms=1_700_000_000_000,
        defaults=defaults or Defaults(),
    )


@st.composite
def money(draw: st.DrawFn) -> tuple[str, Decimal]:
    currency = draw(st.sampled_from(CURRENCIES))
    places = MINOR_UNITS[currency]
    amount = draw(
        st.decimals(
            min_value=Decimal(1).scaleb(-places),
            max_value=MAX_AMOUNT,
            places=places,
            allow_nan=False,
            allow_infinity=False,
        )
    )
    return currency, amount


@given(
    money=money(),
    plain=st.booleans(),
    txn_id=st.none() | st.uuids(),
    user_id=st.none() | st.from_regex(SHORT_TEXT, fullmatch=True),
    merchant=st.none() | st.from_regex(SHORT_TEXT, fullmatch=True),
    ip=st.ip_addresses(),
)
def test_valid_transactions_round_trip_without_losing_precision(
    money: tuple[str, Decimal],
    plain: bool,
    txn_id: uuid.UUID | None,
    user_id: str | None,
    merchant: str | None,
    ip: object,
) -> None:
    """Any valid body validates, encodes and decodes unchanged, with its amount exact."""
    currency, amount = money
    # The amount travels as a JSON number literal: plain ("1500.50") or exponent ("1.5005E+3").
    literal = format(amount, "f") if plain else str(amount)
    fields: dict[str, object] = {"currency": currency, "source_ip": str(ip)}
    for name, value in (("txn_id", txn_id), ("user_id", user_id), ("merchant_type", merchant)):
        if value is not None:
            fields[name] = str(value)
    body = msgspec.json.encode(fields)[:-1] + b',"amount":' + literal.encode() + b"}"

    txn = _validate(body)

    assert txn.amount == amount
    assert txn.amount.as_tuple().exponent == -MINOR_UNITS[currency]  # one canonical form
    assert transaction_decoder.decode(transaction_encoder.encode(txn)) == txn
    if txn_id is not None:
        assert txn.txn_id == txn_id


@pytest.mark.parametrize(
    ("literal", "currency", "expected"),
    [
        ("200000", "INR", "200000.00"),
        ("150000.5", "INR", "150000.50"),
        ("1E+2", "INR", "100.00"),
        ("100.100", "INR", "100.10"),  # trailing zeros are not extra precision
        ("5000", "JPY", "5000"),
        ("1.234", "KWD", "1.234"),
        ("0.01", "USD", "0.01"),
    ],
)
def test_amounts_are_canonicalised_exactly(literal: str, currency: str, expected: str) -> None:
    """Equal amounts get one canonical text with the currency's decimal places."""
    body = f'{{"amount": {literal}, "currency": "{currency}", "source_ip": "1.2.3.4"}}'
    assert str(_validate(body.encode()).amount) == expected


def test_seed_minimal_body_is_valid_with_documented_defaults() -> None:
    """The quick-start body needs nothing but amount and source_ip; settings fill the rest."""
    defaults = defaults_from(
        Settings(default_currency="JPY", default_user_id="walk-in", default_merchant_type="pos")
    )
    txn = _validate(b'{"amount": 200000, "source_ip": "12.34.56.78"}', defaults)
    assert (txn.currency, txn.user_id, txn.merchant_type) == ("JPY", "walk-in", "pos")
    assert txn.amount == Decimal(200000)
    assert txn.txn_id.version == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"amount": 1, "source_ip": "1.2.3.4", "user_id": "bob\\n"}', "user_id"),
        (b'{"amount": 1, "source_ip": "1.2.3.4", "merchant_type": "pos\\n"}', "merchant_type"),
        (b'{"amount": 1, "source_ip": "fe80::1%eth0"}', "source_ip"),
        (b'{"amount": 1.5, "currency": "JPY", "source_ip": "1.2.3.4"}', "amount"),
        (b'{"amount": 1.005, "source_ip": "1.2.3.4"}', "amount"),
        (b'{"amount": 1, "currency": "XAU", "source_ip": "1.2.3.4"}', "currency"),
    ],
)
def test_refused_values_name_their_field(body: bytes, field: str) -> None:
    """A trailing newline, an IPv6 zone id, excess decimals or a non-ISO code are refused."""
    with pytest.raises((FieldError, msgspec.ValidationError)) as caught:
        _validate(body)
    error = caught.value
    named = error.field if isinstance(error, FieldError) else str(error)
    assert field in named


_octet = st.one_of(
    st.integers(0, 300).map(str),
    st.integers(0, 255).map(lambda n: f"0{n}"),  # a leading zero: refused
    st.sampled_from(["", "a", "١", " 1", "-1", "+1"]),
)


@given(st.lists(_octet, min_size=3, max_size=5).map(".".join))
def test_ipv4_fast_path_agrees_with_ipaddress(text: str) -> None:
    """The dotted-quad shortcut accepts exactly what ``ipaddress`` accepts, in the same form."""
    try:
        expected: str | None = str(ipaddress.ip_address(text))
    except ValueError:
        expected = None
    try:
        got: str | None = parse_ip(text)
    except FieldError:
        got = None
    assert got == expected
