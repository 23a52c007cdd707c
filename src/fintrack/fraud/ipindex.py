"""Longest-prefix matching of IP addresses against thousands of networks.

One dict per prefix length maps the integer network address to the network's text. A
lookup masks the address once per prefix length present, longest first, so it costs at
most 33 (IPv4) or 129 (IPv6) dict probes however many networks there are, and in practice
a handful: real blocklists use few distinct prefix lengths.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96


def parse_network(text: str) -> IPNetwork:
    """``10.0.0.0/8``, ``2001:db8::/32`` or a single address (a /32 or /128).

    Host bits must be zero (``10.0.0.1/8`` is refused): a range written that way is
    almost always a typo, and guessing which range was meant could block the wrong people.
    Raises ``ValueError`` saying what is wrong.
    """
    return ipaddress.ip_network(text.strip(), strict=True)


Table = tuple[tuple[int, dict[int, str]], ...]  # (mask, {network address: text}), longest first


def _build(nets: dict[int, dict[int, str]], bits: int) -> Table:
    full = (1 << bits) - 1
    return tuple(
        (full ^ ((1 << (bits - length)) - 1), nets[length]) for length in sorted(nets, reverse=True)
    )


def _probe(table: Table, value: int) -> str | None:
    for mask, networks in table:
        hit = networks.get(value & mask)
        if hit is not None:
            return hit
    return None


class IPIndex:
    """An immutable set of IPv4 and IPv6 networks answering "which one holds this address".

    IPv4-mapped IPv6 addresses (``::ffff:203.0.113.7``) also match IPv4 networks, so a
    blocked IPv4 range cannot be sidestepped by writing the address in IPv6 form.
    """

    __slots__ = ("_networks", "_v4", "_v6")

    def __init__(self, networks: Iterable[str] = ()) -> None:
        """Index ``networks`` (texts as ``parse_network`` takes them); raises ``ValueError``
        naming the first invalid one. Duplicates are harmless."""
        v4: dict[int, dict[int, str]] = {}
        v6: dict[int, dict[int, str]] = {}
        texts: set[str] = set()
        for text in networks:
            try:
                net = parse_network(text)
            except ValueError as e:
                raise ValueError(f"{text[:60]!r} is not an IP address or CIDR range: {e}") from e
            table = v4 if net.version == 4 else v6
            canonical = str(net)
            table.setdefault(net.prefixlen, {})[int(net.network_address)] = canonical
            texts.add(canonical)
        self._v4 = _build(v4, 32)
        self._v6 = _build(v6, 128)
        self._networks = frozenset(texts)

    def __len__(self) -> int:
        return len(self._networks)

    @property
    def networks(self) -> frozenset[str]:
        """The canonical texts of every indexed network (``1.2.3.4`` is ``1.2.3.4/32``)."""
        return self._networks

    def match(self, ip: str) -> str | None:
        """The most specific (longest-prefix) network holding ``ip``, as canonical CIDR text,
        or None. Raises ``ValueError`` if ``ip`` is not an IPv4 or IPv6 address."""
        try:
            if ":" in ip:
                packed = socket.inet_pton(socket.AF_INET6, ip)
                hit = _probe(self._v6, int.from_bytes(packed))
                if hit is None and packed[:12] == _V4_MAPPED_PREFIX:
                    hit = _probe(self._v4, int.from_bytes(packed[12:]))
                return hit
            return _probe(self._v4, int.from_bytes(socket.inet_pton(socket.AF_INET, ip)))
        except OSError as e:  # inet_pton's way of saying "not an address"
            raise ValueError(f"{ip[:45]!r} is not an IPv4 or IPv6 address") from e
