"""IPIndex: longest-prefix matching over IPv4 and IPv6 networks."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fintrack.fraud.ipindex import IPIndex, parse_network


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("10.1.2.0", "10.1.2.0/24"),  # first address
        ("10.1.2.255", "10.1.2.0/24"),  # last address
        ("10.1.1.255", None),  # one below
        ("10.1.3.0", None),  # one above
    ],
)
def test_ipv4_cidr_boundaries(ip: str, expected: str | None) -> None:
    """An IPv4 range holds its first and last address and nothing on either side."""
    assert IPIndex(["10.1.2.0/24"]).match(ip) == expected


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("2001:db8:abcd::", "2001:db8:abcd::/48"),
        ("2001:db8:abcd:ffff:ffff:ffff:ffff:ffff", "2001:db8:abcd::/48"),
        ("2001:db8:abcc:ffff:ffff:ffff:ffff:ffff", None),
        ("2001:db8:abce::", None),
    ],
)
def test_ipv6_cidr_boundaries(ip: str, expected: str | None) -> None:
    """An IPv6 range holds its first and last address and nothing on either side."""
    assert IPIndex(["2001:db8:abcd::/48"]).match(ip) == expected


def test_single_ipv4_address_is_a_slash_32() -> None:
    """A single IPv4 address matches only itself and is reported as a /32."""
    index = IPIndex(["198.51.100.7"])
    assert index.match("198.51.100.7") == "198.51.100.7/32"
    assert index.match("198.51.100.6") is None
    assert index.match("198.51.100.8") is None


def test_single_ipv6_address_is_a_slash_128() -> None:
    """A single IPv6 address matches only itself and is reported as a /128."""
    index = IPIndex(["2001:db8::7/128"])
    assert index.match("2001:db8::7") == "2001:db8::7/128"
    assert index.match("2001:db8::6") is None
    assert index.match("2001:db8::8") is None


def test_overlapping_ranges_answer_the_longest_prefix() -> None:
    """With nested ranges, the most specific one that holds the address is named."""
    index = IPIndex(["10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3", "::/0"])
    assert index.match("10.1.2.3") == "10.1.2.3/32"
    assert index.match("10.1.2.4") == "10.1.2.0/24"
    assert index.match("10.1.9.9") == "10.1.0.0/16"
    assert index.match("10.200.0.1") == "10.0.0.0/8"
    assert index.match("11.0.0.0") is None  # ::/0 covers IPv6 only
    assert index.match("2001:db8::1") == "::/0"


def test_ipv4_mapped_ipv6_matches_ipv4_ranges() -> None:
    """``::ffff:a.b.c.d`` is caught by a blocked IPv4 range."""
    index = IPIndex(["203.0.113.0/24"])
    assert index.match("::ffff:203.0.113.9") == "203.0.113.0/24"
    assert index.match("::ffff:203.0.114.9") is None


def test_empty_index_matches_nothing() -> None:
    """An index without networks never matches."""
    assert IPIndex().match("1.2.3.4") is None
    assert IPIndex().match("::1") is None
    assert len(IPIndex()) == 0


def test_networks_are_canonical_and_deduplicated() -> None:
    """Networks are kept in canonical CIDR text; duplicates count once."""
    index = IPIndex(["2001:DB8::/32", "2001:db8:0::/32", " 1.2.3.4 "])
    assert index.networks == frozenset({"2001:db8::/32", "1.2.3.4/32"})
    assert len(index) == 2


@pytest.mark.parametrize("bad", ["10.0.0.1/8", "300.1.1.1", "10.0.0.0/33", "nope", ""])
def test_invalid_network_is_refused_by_name(bad: str) -> None:
    """Invalid texts and ranges with host bits set raise ValueError quoting the entry."""
    with pytest.raises(ValueError, match="is not an IP address or CIDR range"):
        IPIndex(["10.0.0.0/8", bad])
    with pytest.raises(ValueError):  # noqa: PT011 - ipaddress's own messages vary
        parse_network(bad)


@pytest.mark.parametrize("bad", ["1.2.3", "1.2.3.4.5", "fe80::1%eth0", "::g", ""])
def test_match_refuses_a_non_address(bad: str) -> None:
    """Looking up something that is not an IP address raises ValueError."""
    with pytest.raises(ValueError, match="is not an IPv4 or IPv6 address"):
        IPIndex(["10.0.0.0/8"]).match(bad)


def _brute_force(networks: list[str], ip: str) -> str | None:
    address = ipaddress.ip_address(ip)
    holding = [n for n in map(ipaddress.ip_network, networks) if address in n]
    return str(max(holding, key=lambda n: n.prefixlen)) if holding else None


# Networks and addresses drawn from one small neighbourhood per family, so that matches,
# near misses and nesting are all common.
_V4_BASE = int(ipaddress.IPv4Address("198.18.0.0"))
_V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))


@st.composite
def _v4_network(draw: st.DrawFn) -> str:
    length = draw(st.integers(16, 32))
    value = _V4_BASE + draw(st.integers(0, 2**16 - 1))
    return str(ipaddress.IPv4Network((value, length), strict=False))


@st.composite
def _v6_network(draw: st.DrawFn) -> str:
    length = draw(st.integers(112, 128))
    value = _V6_BASE + draw(st.integers(0, 2**16 - 1))
    return str(ipaddress.IPv6Network((value, length), strict=False))


_v4_ip = st.integers(0, 2**16 - 1).map(lambda v: str(ipaddress.IPv4Address(_V4_BASE + v)))
_v6_ip = st.integers(0, 2**16 - 1).map(lambda v: str(ipaddress.IPv6Address(_V6_BASE + v)))


@given(
    networks=st.lists(st.one_of(_v4_network(), _v6_network()), max_size=40),
    ips=st.lists(st.one_of(_v4_ip, _v6_ip), min_size=1, max_size=20),
)
def test_agrees_with_brute_force(networks: list[str], ips: list[str]) -> None:
    """For any networks and address, the index answers what a linear ipaddress scan does."""
    index = IPIndex(networks)
    for ip in ips:
        assert index.match(ip) == _brute_force(networks, ip)
