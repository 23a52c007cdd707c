"""Rule settings: safe defaults, TOML loading, validation errors naming the key, hot reload."""

from __future__ import annotations

import os
from decimal import Context, Decimal
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from fintrack.fraud.settings import (
    MissingRateError,
    RuleSettings,
    RuleSettingsError,
    RuleSettingsWatcher,
    load_rule_settings,
    parse_rule_settings,
    rule_settings_to_builtins,
    to_base,
    to_base_or_none,
)

EXAMPLE = Path(__file__).parents[2] / "rules.example.toml"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    """No path (None or "") gives the built-in defaults."""
    assert load_rule_settings(None) == RuleSettings()
    assert load_rule_settings("") == RuleSettings()
    assert parse_rule_settings({}) == RuleSettings()


def test_defaults_are_safe() -> None:
    """The defaults have 0 < flag <= block and a blocklist score that blocks on its own."""
    s = RuleSettings()
    assert 0 < s.flag_threshold <= s.block_threshold
    assert s.blocklist.score >= s.block_threshold
    assert s.high_value.score >= s.flag_threshold
    assert s.rates["USD"] == 1
    assert {"INR", "EUR", "GBP", "JPY"} <= s.rates.keys()


def test_example_file_loads_as_the_defaults() -> None:
    """rules.example.toml is valid and spells out exactly the defaults."""
    assert load_rule_settings(EXAMPLE) == RuleSettings()


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    """Keys left out keep their defaults; a given table replaces the default one."""
    path = write(tmp_path / "r.toml", "flag_threshold = 40\n[merchants]\ncrypto = 10\n")
    s = load_rule_settings(path)
    assert s.flag_threshold == 40
    assert s.block_threshold == RuleSettings().block_threshold
    assert s.merchants == {"crypto": 10}
    assert s.velocity == RuleSettings().velocity


def test_toml_floats_are_exact(tmp_path: Path) -> None:
    """A TOML float like 0.1 becomes Decimal("0.1"), never a binary float."""
    path = write(tmp_path / "r.toml", '[rates]\nINR = 0.1\nEUR = "1.07"\nGBP = 2\n')
    s = load_rule_settings(path)
    assert s.rates == {
        "INR": Decimal("0.1"),
        "EUR": Decimal("1.07"),
        "GBP": Decimal(2),
        "USD": Decimal(1),  # the base currency's rate is implied
    }


def test_values_are_normalised(tmp_path: Path) -> None:
    """Networks become canonical CIDR text and merchant categories lower case."""
    path = write(
        tmp_path / "r.toml",
        'merchants = {Crypto = 40}\n[blocklist]\nnetworks = ["1.2.3.4", "2001:DB8::/32"]\n',
    )
    s = load_rule_settings(path)
    assert s.blocklist.networks == ("1.2.3.4/32", "2001:db8::/32")
    assert s.merchants == {"crypto": 40}


def test_other_base_currency_with_its_rates(tmp_path: Path) -> None:
    """A base currency other than USD works when its rate table is given."""
    path = write(tmp_path / "r.toml", 'base_currency = "EUR"\n[rates]\nUSD = "0.92"\n')
    s = load_rule_settings(path)
    assert s.rates == {"EUR": Decimal(1), "USD": Decimal("0.92")}


def test_builtins_round_trip() -> None:
    """Settings turned into plain data (for the admin API) parse back unchanged."""
    data = rule_settings_to_builtins(RuleSettings())
    assert data["high_value"]["thresholds"]["INR"] == "100000"
    assert parse_rule_settings(data) == RuleSettings()


def test_window_limit_follows_the_retention() -> None:
    """Windows may be as long as the activity retention passed in, not longer."""
    data = {"velocity": {"windows": [{"window_s": 3600, "max_count": 5}]}}
    assert parse_rule_settings(data, max_window_s=3600).velocity.windows[0].window_s == 3600
    with pytest.raises(RuleSettingsError, match="at most 600"):
        parse_rule_settings(data, max_window_s=600)


BAD = [
    ("unknown_top_key", "colour = 1", "colour: unknown key"),
    (
        "unknown_nested_key",
        "[[velocity.windows]]\nwindow_s = 60\nmax_count = 5\nmax_cuont = 3",
        "velocity.windows[0].max_cuont: unknown key",
    ),
    ("unknown_table_key", "[blocklist]\nscroe = 5", "blocklist.scroe: unknown key"),
    (
        "wrong_type_int",
        'flag_threshold = "high"',
        "flag_threshold: must be an integer, got a string",
    ),
    ("float_for_int", "block_threshold = 99.5", "block_threshold: must be an integer"),
    ("bool_for_rate", "[rates]\nINR = true", "rates.INR: must be a number"),
    ("text_for_rate", '[rates]\nINR = "cheap"', "rates.INR: invalid decimal string"),
    ("table_expected", 'blocklist = "all"', "blocklist: must be a table, got a string"),
    ("array_expected", '[blocklist]\nnetworks = "1.2.3.4"', "blocklist.networks: must be an array"),
    ("merchant_weight_type", "[merchants]\ncrypto = 1.5", "merchants.crypto: must be an integer"),
    ("negative_flag", "flag_threshold = -5", "flag_threshold: must be a positive integer"),
    ("zero_block", "block_threshold = 0", "block_threshold: must be a positive integer"),
    ("flag_above_block", "flag_threshold = 120", "flag_threshold: must not be above block"),
    ("negative_score", "[blocklist]\nscore = -1", "blocklist.score: must be zero (off) or"),
    ("negative_weight", "[merchants]\ncrypto = -3", "merchants.crypto: must be zero (off) or"),
    (
        "negative_currency_threshold",
        "[high_value.thresholds]\nINR = -1",
        "high_value.thresholds.INR: must be a positive number",
    ),
    (
        "zero_default_threshold",
        "[high_value]\ndefault_threshold = 0",
        "high_value.default_threshold: must be a positive number",
    ),
    ("nan_rate", "[rates]\nINR = nan", "rates.INR: must be a positive number"),
    ("zero_rate", '[rates]\nINR = "0"', "rates.INR: must be a positive number"),
    ("base_rate_not_one", "[rates]\nUSD = 2", "rates.USD: the base currency's rate must be 1"),
    ("unknown_rate_currency", "[rates]\nXYZ = 1", "rates.XYZ: 'XYZ' is not an ISO 4217"),
    (
        "lowercase_threshold_currency",
        "[high_value.thresholds]\nusd = 1",
        "high_value.thresholds.usd: 'usd' is not an ISO 4217",
    ),
    ("unknown_base_currency", 'base_currency = "ABC"', "base_currency: 'ABC' is not an ISO 4217"),
    ("base_without_rates", 'base_currency = "EUR"', "rates: the default table is in USD"),
    (
        "zero_max_count",
        "[[velocity.windows]]\nwindow_s = 60\nmax_count = 5\n"
        "[[velocity.windows]]\nwindow_s = 120\nmax_count = 0",
        "velocity.windows[1].max_count: must be a positive integer",
    ),
    (
        "negative_window",
        "[[velocity.windows]]\nwindow_s = -60\nmax_count = 5",
        "velocity.windows[0].window_s: must be a positive integer",
    ),
    (
        "window_too_long",
        "[[velocity.windows]]\nwindow_s = 172801\nmax_count = 5",
        "velocity.windows[0].window_s: must be at most 172800",
    ),
    (
        "duplicate_window",
        "[[velocity.windows]]\nwindow_s = 60\nmax_count = 5\n"
        "[[velocity.windows]]\nwindow_s = 60\nmax_count = 9",
        "velocity.windows[1].window_s: another window has the same length",
    ),
    (
        "window_without_limit",
        "[[velocity.windows]]\nwindow_s = 60",
        "velocity.windows[0]: needs max_count, max_amount or both",
    ),
    (
        "negative_max_amount",
        '[[velocity.windows]]\nwindow_s = 60\nmax_amount = "-1"',
        "velocity.windows[0].max_amount: must be a positive number",
    ),
    (
        "bad_network",
        '[blocklist]\nnetworks = ["10.0.0.0/8", "10.0.0.1/8"]',
        "blocklist.networks[1]: 10.0.0.1/8 has host bits set",
    ),
    ("bad_category", '[merchants]\n"a b" = 3', "merchants.a b: not a merchant category name"),
    (
        "category_twice",
        "[merchants]\ncrypto = 3\nCRYPTO = 4",
        "merchants.CRYPTO: listed twice",
    ),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid_file_is_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    """Each kind of mistake is refused with the file, the key path and the problem."""
    path = write(tmp_path / "rules.toml", text + "\n")
    with pytest.raises(RuleSettingsError) as info:
        load_rule_settings(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_not_toml_is_refused(tmp_path: Path) -> None:
    """A file that is not TOML is refused naming the file."""
    path = write(tmp_path / "rules.toml", "flag_threshold = = 3\n")
    with pytest.raises(RuleSettingsError, match=r"rules\.toml: not valid TOML"):
        load_rule_settings(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A path to nothing is an error, not a silent fallback to defaults."""
    with pytest.raises(RuleSettingsError, match="cannot read"):
        load_rule_settings(tmp_path / "absent.toml")


def test_to_base_is_exact() -> None:
    """Conversion multiplies exactly, beyond the default 28-digit context."""
    rate = Decimal("0.012345678901234567")
    s = msgspec.structs.replace(RuleSettings(), rates={"USD": Decimal(1), "INR": rate})
    big = Decimal("999999999999.9999")
    exact = Context(prec=100).multiply(big, rate)  # 34 significant digits
    assert to_base(big, "INR", s) == exact
    assert big * rate != exact  # what the default 28-digit context would have given
    assert to_base(Decimal("1500000"), "JPY", RuleSettings()) == Decimal("10050.0000")
    assert to_base(Decimal("12.34"), "USD", s) == Decimal("12.34")


def test_to_base_without_rate() -> None:
    """A currency without a rate raises MissingRateError, or gives None on request."""
    with pytest.raises(MissingRateError, match="THB"):
        to_base(Decimal(1), "THB", RuleSettings())
    assert to_base_or_none(Decimal(1), "THB", RuleSettings()) is None


# ---- watcher ----------------------------------------------------------------------------


def bump(path: Path, text: str) -> None:
    """Rewrite ``path`` and move its mtime forward so the change is visible at any mtime
    granularity (the watcher compares mtime, ctime, size and inode)."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def test_watcher_without_path_keeps_defaults() -> None:
    """With no file the watcher serves the defaults and never reloads."""
    watcher = RuleSettingsWatcher(None)
    assert watcher.current() == RuleSettings()
    assert watcher.reload_if_changed() is False


def test_watcher_reloads_on_change(tmp_path: Path) -> None:
    """A changed file is picked up once; an unchanged one is not re-read."""
    path = write(tmp_path / "rules.toml", "flag_threshold = 40\n")
    watcher = RuleSettingsWatcher(path)
    assert watcher.current().flag_threshold == 40
    assert watcher.reload_if_changed() is False
    bump(path, "flag_threshold = 45\nblock_threshold = 90\n")
    with capture_logs() as logs:
        assert watcher.reload_if_changed() is True
    assert (watcher.current().flag_threshold, watcher.current().block_threshold) == (45, 90)
    assert [entry["event"] for entry in logs] == ["rule_settings_reloaded"]
    assert watcher.reload_if_changed() is False


def test_watcher_keeps_old_settings_on_invalid_file(tmp_path: Path) -> None:
    """An invalid new file is logged with the key at fault and the old settings stay."""
    path = write(tmp_path / "rules.toml", "flag_threshold = 40\n")
    watcher = RuleSettingsWatcher(path)
    bump(path, "flag_threshold = -1\n")
    with capture_logs() as logs:
        assert watcher.reload_if_changed() is False
        assert watcher.reload_if_changed() is False  # logged once per change, not per poll
    assert watcher.current().flag_threshold == 40
    assert len(logs) == 1
    assert logs[0]["event"] == "rule_settings_rejected"
    assert logs[0]["log_level"] == "warning"
    assert "flag_threshold: must be a positive integer" in logs[0]["error"]
    bump(path, "flag_threshold = 30\n")
    assert watcher.reload_if_changed() is True
    assert watcher.current().flag_threshold == 30


def test_watcher_keeps_old_settings_when_file_disappears(tmp_path: Path) -> None:
    """A deleted file is logged and the last good settings stay in force."""
    path = write(tmp_path / "rules.toml", "flag_threshold = 40\n")
    watcher = RuleSettingsWatcher(path)
    path.unlink()
    with capture_logs() as logs:
        assert watcher.reload_if_changed() is False
    assert watcher.current().flag_threshold == 40
    assert "cannot read" in logs[0]["error"]


def test_watcher_refuses_an_invalid_file_at_start(tmp_path: Path) -> None:
    """The first load fails loudly: a worker must not start on broken settings."""
    path = write(tmp_path / "rules.toml", "nonsense = true\n")
    with pytest.raises(RuleSettingsError, match="nonsense: unknown key"):
        RuleSettingsWatcher(path)
