"""Rule settings: thresholds, windows, weights and lists are data, not code.

They come from a TOML file (``FINTRACK_RULES_FILE``, see ``rules.example.toml``) or, without
one, from the safe defaults below. Everything is validated at load: an unknown key, a value
of the wrong type, a non-positive limit or an unknown currency is refused with a
``RuleSettingsError`` naming the key path, e.g.
``velocity.windows[1].max_count: must be a positive integer``. A table given in the file
replaces the default table as a whole (``[merchants]`` lists every risky category).

Money limits are exact ``Decimal``s. Amounts in different currencies are compared in one
base currency through a fixed rate table: fraud thresholds are orders of magnitude, so
rates that are a few percent stale do not matter, and fixed rates keep decisions
reproducible (the same transaction always gets the same verdict).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import msgspec
import structlog

from fintrack.config import Settings
from fintrack.core.currencies import MINOR_UNITS
from fintrack.fraud.ipindex import parse_network

# Velocity windows can't be longer than the per-user history the api keeps.
MAX_WINDOW_S = Settings().activity_retention_s

# Conversions are exact: 60 digits hold any amount (<= 10^12, 4 decimals) times any rate.
_EXACT = Context(prec=60)
EXACT = _EXACT  # for fraud.velocity, which inlines the conversion in its hot loop


class RuleSettingsError(ValueError):
    """Rule settings are invalid; the message names the key path and the problem."""


class MissingRateError(LookupError):
    """A currency has no rate to the base currency in the settings."""


def _decimals(table: Mapping[str, str]) -> dict[str, Decimal]:
    return {code: Decimal(value) for code, value in table.items()}


# Approximate mid-market rates: 1 unit of the currency = this many US dollars.
DEFAULT_RATES = _decimals(
    {
        "USD": "1",
        "EUR": "1.08",
        "GBP": "1.27",
        "INR": "0.012",
        "JPY": "0.0067",
        "CNY": "0.14",
        "CHF": "1.13",
        "CAD": "0.73",
        "AUD": "0.66",
        "NZD": "0.60",
        "SGD": "0.74",
        "HKD": "0.128",
        "AED": "0.2723",
        "SAR": "0.2667",
        "KRW": "0.00073",
        "BRL": "0.18",
        "MXN": "0.055",
        "ZAR": "0.054",
        "SEK": "0.095",
        "NOK": "0.093",
        "DKK": "0.145",
        "PLN": "0.25",
    }
)

DEFAULT_HIGH_VALUE = _decimals(
    {"INR": "100000", "USD": "10000", "EUR": "9000", "GBP": "8000", "JPY": "1500000"}
)

DEFAULT_MERCHANTS: dict[str, int] = {
    "luxury_goods": 30,
    "crypto": 40,
    "gambling": 40,
    "gift_cards": 35,
    "wire_transfer": 25,
}


class BlocklistSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The IP blocklist rule: its score, and networks blocked on top of the managed list."""

    score: int = 100
    networks: tuple[str, ...] = ()


class VelocityWindow(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A sliding window over a user's transactions: more than ``max_count`` of them, or
    more than ``max_amount`` (in the base currency), adds the matching score."""

    window_s: int
    max_count: int | None = None
    count_score: int = 40
    max_amount: Decimal | None = None
    amount_score: int = 40


class VelocitySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The velocity rules' windows."""

    windows: tuple[VelocityWindow, ...] = (
        VelocityWindow(window_s=60, max_count=5, max_amount=Decimal("5000"), amount_score=30),
        VelocityWindow(window_s=86400, max_count=50, count_score=30, max_amount=Decimal("10000")),
    )


class HighValueSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """High-value thresholds: per currency, and a base-currency one for all the others."""

    score: int = 50
    thresholds: dict[str, Decimal] = msgspec.field(default_factory=lambda: dict(DEFAULT_HIGH_VALUE))
    default_threshold: Decimal = Decimal("10000")


class RuleSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every knob of the fraud rules. The defaults are safe on their own.

    A risk score at or above ``block_threshold`` blocks, at or above ``flag_threshold``
    flags, anything lower approves. ``rates[C]`` is what one unit of currency ``C`` is
    worth in ``base_currency``.
    """

    base_currency: str = "USD"
    flag_threshold: int = 50
    block_threshold: int = 100
    rates: dict[str, Decimal] = msgspec.field(default_factory=lambda: dict(DEFAULT_RATES))
    blocklist: BlocklistSettings = BlocklistSettings()
    velocity: VelocitySettings = VelocitySettings()
    high_value: HighValueSettings = HighValueSettings()
    merchants: dict[str, int] = msgspec.field(default_factory=lambda: dict(DEFAULT_MERCHANTS))


def to_base(amount: Decimal, currency: str, settings: RuleSettings) -> Decimal:
    """``amount`` of ``currency`` in the base currency, exactly (no rounding).

    Raises ``MissingRateError`` if the settings have no rate for ``currency``."""
    converted = to_base_or_none(amount, currency, settings)
    if converted is None:
        raise MissingRateError(f"no rate from {currency} to {settings.base_currency}")
    return converted


def to_base_or_none(amount: Decimal, currency: str, settings: RuleSettings) -> Decimal | None:
    """Like ``to_base``, but None when there is no rate for ``currency``."""
    if currency == settings.base_currency:
        return amount
    rate = settings.rates.get(currency)
    return None if rate is None else _EXACT.multiply(amount, rate)


def exact_sum(amounts: list[Decimal]) -> Decimal:
    """The exact sum of ``amounts`` (the default context would round past 28 digits)."""
    total = Decimal(0)
    for amount in amounts:
        total = _EXACT.add(total, amount)
    return total


def exact_add(a: Decimal, b: Decimal) -> Decimal:
    """``a + b`` without rounding."""
    return _EXACT.add(a, b)


def exact_difference(a: Decimal, b: Decimal) -> Decimal:
    """``a - b`` without rounding."""
    return _EXACT.subtract(a, b)


# ---- loading and validation -------------------------------------------------------------

_MSGSPEC_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_MSGSPEC_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`$")
_MSGSPEC_TYPE = re.compile(r"^Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`$")
_TYPE_WORDS = {
    "int": "an integer",
    "str": "a string",
    "float": "a number",
    "decimal": 'a number (or a decimal string like "0.012")',
    "bool": "a boolean",
    "object": "a table",
    "array": "an array",
    "null": "nothing",
    "int | null": "an integer",
    "decimal | null": "a number (or a decimal string)",
}
_CATEGORY = re.compile(r"^[\w.@:+-]{1,64}$")


def _msgspec_problem(e: msgspec.ValidationError, prefix: str = "") -> str:
    """msgspec's "Expected `int`, got `str` - at `$.a.b[1]`" as "a.b[1]: must be ...";
    ``prefix`` is the key path of the value that was converted."""
    m = _MSGSPEC_AT.match(str(e))
    assert m is not None  # the pattern matches any text
    msg, path = m["msg"], prefix + (m["path"] or "")
    path = path.lstrip(".")
    if unknown := _MSGSPEC_UNKNOWN.match(msg):
        key = unknown["key"]
        return f"{path + '.' if path else ''}{key}: unknown key"
    if typed := _MSGSPEC_TYPE.match(msg):
        want = _TYPE_WORDS.get(typed["want"], typed["want"])
        got = _TYPE_WORDS.get(typed["got"], typed["got"])
        msg = f"must be {want}, got {got}"
    else:
        msg = msg[:1].lower() + msg[1:]  # "Invalid decimal string" reads as a clause
    return f"{path or '(top level)'}: {msg}"


def _positive_int(value: int, path: str) -> None:
    if value < 1:
        raise RuleSettingsError(f"{path}: must be a positive integer")


def _score(value: int, path: str) -> None:
    if value < 0:
        raise RuleSettingsError(f"{path}: must be zero (off) or a positive integer")


def _positive_decimal(value: Decimal, path: str) -> None:
    if not value.is_finite() or value <= 0:
        raise RuleSettingsError(f"{path}: must be a positive number")


def _currency(code: str, path: str) -> None:
    if code not in MINOR_UNITS:
        raise RuleSettingsError(f"{path}: {code[:12]!r} is not an ISO 4217 currency code")


def _decimal_table(raw: Any, path: str) -> None:
    """Name the entry of a currency table that msgspec would only call ``[...]``."""
    if not isinstance(raw, Mapping):
        return  # msgspec reports the table's own type
    for key, value in raw.items():
        try:
            msgspec.convert(value, Decimal)
        except msgspec.ValidationError as e:
            raise RuleSettingsError(_msgspec_problem(e, f"{path}.{key}")) from e


def _check_tables(data: Mapping[str, Any]) -> None:
    _decimal_table(data.get("rates"), "rates")
    high_value = data.get("high_value")
    if isinstance(high_value, Mapping):
        _decimal_table(high_value.get("thresholds"), "high_value.thresholds")
    merchants = data.get("merchants")
    if isinstance(merchants, Mapping):
        for key, value in merchants.items():
            if type(value) is not int:
                raise RuleSettingsError(f"merchants.{key}: must be an integer weight")


def _validate(s: RuleSettings, explicit_rates: bool, max_window_s: int) -> RuleSettings:
    """Semantic checks msgspec's types can't express; returns the normalised settings."""
    _currency(s.base_currency, "base_currency")
    _positive_int(s.flag_threshold, "flag_threshold")
    _positive_int(s.block_threshold, "block_threshold")
    if s.flag_threshold > s.block_threshold:
        raise RuleSettingsError("flag_threshold: must not be above block_threshold")

    if s.base_currency != "USD" and not explicit_rates:
        raise RuleSettingsError(
            f"rates: the default table is in USD; give the rates to {s.base_currency}"
        )
    rates = dict(s.rates)
    for code, rate in rates.items():
        _currency(code, f"rates.{code}")
        _positive_decimal(rate, f"rates.{code}")
    if rates.setdefault(s.base_currency, Decimal(1)) != 1:
        raise RuleSettingsError(f"rates.{s.base_currency}: the base currency's rate must be 1")

    _score(s.blocklist.score, "blocklist.score")
    networks: list[str] = []
    for i, text in enumerate(s.blocklist.networks):
        try:
            networks.append(str(parse_network(text)))
        except ValueError as e:
            raise RuleSettingsError(f"blocklist.networks[{i}]: {e}") from e

    seen: set[int] = set()
    for i, w in enumerate(s.velocity.windows):
        at = f"velocity.windows[{i}]"
        _positive_int(w.window_s, f"{at}.window_s")
        if w.window_s > max_window_s:
            raise RuleSettingsError(
                f"{at}.window_s: must be at most {max_window_s} (the activity retention)"
            )
        if w.window_s in seen:
            raise RuleSettingsError(f"{at}.window_s: another window has the same length")
        seen.add(w.window_s)
        if w.max_count is None and w.max_amount is None:
            raise RuleSettingsError(f"{at}: needs max_count, max_amount or both")
        if w.max_count is not None:
            _positive_int(w.max_count, f"{at}.max_count")
        if w.max_amount is not None:
            _positive_decimal(w.max_amount, f"{at}.max_amount")
        _score(w.count_score, f"{at}.count_score")
        _score(w.amount_score, f"{at}.amount_score")

    hv = s.high_value
    _score(hv.score, "high_value.score")
    _positive_decimal(hv.default_threshold, "high_value.default_threshold")
    for code, limit in hv.thresholds.items():
        _currency(code, f"high_value.thresholds.{code}")
        _positive_decimal(limit, f"high_value.thresholds.{code}")

    merchants: dict[str, int] = {}
    for name, weight in s.merchants.items():
        if not _CATEGORY.match(name):
            raise RuleSettingsError(f"merchants.{name[:64]}: not a merchant category name")
        _score(weight, f"merchants.{name}")
        if name.lower() in merchants:
            raise RuleSettingsError(f"merchants.{name}: listed twice (categories ignore case)")
        merchants[name.lower()] = weight  # matched case-insensitively

    return msgspec.structs.replace(
        s,
        rates=rates,
        blocklist=msgspec.structs.replace(s.blocklist, networks=tuple(networks)),
        merchants=merchants,
    )


def parse_rule_settings(
    data: Mapping[str, Any], *, max_window_s: int = MAX_WINDOW_S
) -> RuleSettings:
    """Validate plain data (a parsed TOML document, or JSON from the admin API).

    Numbers for money may be ints, ``Decimal``s or decimal strings; binary floats are
    accepted too but a string (``"0.012"``) says exactly what is meant.
    Raises ``RuleSettingsError`` naming the first bad key."""
    _check_tables(data)
    try:
        settings = msgspec.convert(data, RuleSettings)
    except msgspec.ValidationError as e:
        raise RuleSettingsError(_msgspec_problem(e)) from e
    return _validate(settings, "rates" in data, max_window_s)


def load_rule_settings(
    path: str | Path | None, *, max_window_s: int = MAX_WINDOW_S
) -> RuleSettings:
    """Rule settings from the TOML file at ``path``; the defaults if ``path`` is None or "".

    Raises ``RuleSettingsError`` (prefixed with the file name) if the file can't be read,
    isn't TOML, or fails validation."""
    if path is None or str(path) == "":
        return RuleSettings()
    try:
        with Path(path).open("rb") as f:
            # TOML floats as Decimals: `rate = 0.012` must not pass through a binary float.
            data = tomllib.load(f, parse_float=Decimal)
    except OSError as e:
        raise RuleSettingsError(f"{path}: cannot read: {e.strerror or e}") from e
    except tomllib.TOMLDecodeError as e:
        raise RuleSettingsError(f"{path}: not valid TOML: {e}") from e
    try:
        return parse_rule_settings(data, max_window_s=max_window_s)
    except RuleSettingsError as e:
        raise RuleSettingsError(f"{path}: {e}") from e


def rule_settings_to_builtins(settings: RuleSettings) -> dict[str, Any]:
    """Plain data (money as decimal strings) that ``parse_rule_settings`` reads back."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    return data


# ---- hot reload -------------------------------------------------------------------------

_Signature = tuple[int, int, int, int] | None


def _signature(path: Path | None) -> _Signature:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    # ctime and inode too: an editor's atomic rename or a same-size rewrite within one
    # mtime tick still counts as a change.
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


class RuleSettingsWatcher:
    """Holds the current rule settings and reloads them when the file changes.

    The first load raises ``RuleSettingsError`` (a worker must not start on a broken file);
    later, an invalid or missing file is logged once per change and the last good settings
    stay in force. Without a path the defaults are used and never change.
    """

    __slots__ = ("_current", "_max_window_s", "_path", "_signature")

    def __init__(self, path: str | Path | None, *, max_window_s: int = MAX_WINDOW_S) -> None:
        self._path = Path(path) if path else None
        self._max_window_s = max_window_s
        # Stat before reading: a change made while we read is seen by the next check.
        self._signature = _signature(self._path)
        self._current = load_rule_settings(self._path, max_window_s=max_window_s)

    @property
    def path(self) -> Path | None:
        return self._path

    def current(self) -> RuleSettings:
        """The settings in force."""
        return self._current

    def reload_if_changed(self) -> bool:
        """Reload if the file's mtime, size or inode moved; True if new settings took effect."""
        if self._path is None:
            return False
        signature = _signature(self._path)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            settings = load_rule_settings(self._path, max_window_s=self._max_window_s)
        except RuleSettingsError as e:
            # A fresh logger each time: reloads are rare, and this stays testable with
            # structlog.testing.capture_logs even after loggers were cached.
            structlog.get_logger(__name__).warning(
                "rule_settings_rejected", path=str(self._path), error=str(e)
            )
            return False
        self._current = settings
        structlog.get_logger(__name__).info("rule_settings_reloaded", path=str(self._path))
        return True
