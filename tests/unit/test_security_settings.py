"""Settings of the security limits: defaults, and bad values refused naming the variable."""

from __future__ import annotations

import pytest

from fintrack.config import Settings, SettingsError


def test_defaults_keep_limits_on_and_cors_and_rate_limit_off() -> None:
    """Out of the box: header, depth and text limits set; no CORS; no rate limit."""
    s = Settings()
    assert (s.max_header_bytes, s.max_json_depth, s.max_text_length) == (16_384, 32, 64)
    assert s.cors_origin_list == []
    assert s.rate_limit == 0


def test_values_are_read_from_the_environment() -> None:
    """FINTRACK_* names map to the new fields, lists and windows are parsed."""
    s = Settings.from_env(
        {
            "FINTRACK_RATE_LIMIT": "100",
            "FINTRACK_RATE_WINDOW_S": "0.5",
            "FINTRACK_CORS_ORIGINS": "https://a.example/, http://b.example:8080",
            "FINTRACK_KEY_REFRESH_S": "2",
        }
    )
    assert (s.rate_limit, s.rate_window_ms, s.key_refresh_s) == (100, 500, 2.0)
    assert s.cors_origin_list == ["https://a.example", "http://b.example:8080"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FINTRACK_MAX_HEADER_BYTES", "0"),
        ("FINTRACK_MAX_JSON_DEPTH", "1"),
        ("FINTRACK_MAX_TEXT_LENGTH", "257"),
        ("FINTRACK_RATE_LIMIT", "-1"),
        ("FINTRACK_RATE_WINDOW_S", "0"),
        ("FINTRACK_KEY_REFRESH_S", "0"),
        ("FINTRACK_CORS_ORIGINS", "javascript:alert(1)"),
    ],
)
def test_bad_values_are_refused_naming_the_variable(name: str, value: str) -> None:
    """A value the limits can't work with stops the process, naming the variable."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_rate_limit_too_large_for_exact_counting_is_refused() -> None:
    """limit × window (ms) must stay exact in Lua's doubles."""
    with pytest.raises(SettingsError, match="FINTRACK_RATE_LIMIT"):
        Settings(rate_limit=10**9, rate_window_s=86_400)


def test_short_session_secret_is_refused_without_echoing_it() -> None:
    """A session secret under 32 characters is refused naming FINTRACK_SESSION_SECRET; the
    message does not contain the value."""
    short = "short-secret-" + "q7" * 9  # 31 characters
    with pytest.raises(SettingsError, match="FINTRACK_SESSION_SECRET") as refused:
        Settings.from_env({"FINTRACK_SESSION_SECRET": short})
    assert short not in str(refused.value)
    assert "q7q7" not in str(refused.value)
    with pytest.raises(SettingsError, match="FINTRACK_SESSION_SECRET"):
        Settings(session_secret=short)


def test_session_secret_is_optional_and_kept_out_of_repr() -> None:
    """Unset by default; 32 characters are enough; the value reaches child processes through
    to_env() but never repr()."""
    assert Settings().session_secret == ""
    secret = "a-session-secret-of-32-chars-" + "xyz"
    s = Settings.from_env({"FINTRACK_SESSION_SECRET": f" {secret} "})
    assert s.session_secret == secret
    assert secret not in repr(s)
    assert Settings.from_env(s.to_env()).session_secret == secret
