"""The benchmark's command line: the sustained run's defaults, and bad values refused with
a message naming the option before anything starts."""

from __future__ import annotations

import pytest
from benchmarks.__main__ import _options, _parser
from benchmarks._context import Options


def _parse(*argv: str) -> Options:
    return _options(_parser().parse_args(list(argv)))


@pytest.mark.parametrize(
    ("argv", "seconds"),
    [
        ((), 60.0),  # the full suite judges the stretch on a minute
        (("--quick",), 0.0),  # a quick look skips it
        (("--quick", "--sustained-s", "5"), 5.0),
        (("--sustained-s", "0"), 0.0),
    ],
)
def test_sustained_run_length(argv: tuple[str, ...], seconds: float) -> None:
    assert _parse(*argv).sustained_s == seconds


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("--duration", "0"), "--duration"),
        (("--sustained-s", "-1"), "--sustained-s"),
        (("--sustained-rate", "0"), "--sustained-rate"),
        (("--sustained-users", "0"), "--sustained-users"),
    ],
)
def test_bad_values_are_refused_by_name(argv: tuple[str, ...], named: str) -> None:
    with pytest.raises(SystemExit, match=named):
        _parse(*argv)
