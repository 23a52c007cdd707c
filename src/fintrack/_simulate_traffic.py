"""Simulated traffic for ``fintrack simulate``: a pure, seeded generator (no I/O).

The same seed and profile always give the same sequence of transactions, ``txn_id``s
included (they come from the seeded RNG, not ``uuid4``), so a run can be replayed exactly —
against the same api the replays are idempotent.

Traffic is a sequence of *incidents*. Most are one ordinary purchase by one of the simulated
users; a configurable share of the *transactions* belongs to three fraud patterns, in equal
parts, each aimed at one of a separate set of accounts:

- ``blocklisted_ip``: a purchase from an address inside one of the blocked networks;
- ``velocity_burst``: one user firing 10–15 purchases back to back (they are consecutive in
  the sequence, so at any rate above a few per second they land within seconds);
- ``high_value_luxury``: a luxury-goods purchase worth 15,000–120,000 USD in the user's
  currency.

Amounts are exact Decimals with the currency's number of decimals. Ordinary purchases stay
well below high-value thresholds, but they are not sanitised: a busy user may still trip a
velocity rule, as real customers do.
"""

from __future__ import annotations

import ipaddress
import math
import random
import uuid
from collections.abc import Iterator, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Literal

import msgspec

from fintrack.core.currencies import MINOR_UNITS

Pattern = Literal["normal", "blocklisted_ip", "velocity_burst", "high_value_luxury"]
FRAUD_PATTERNS: tuple[Pattern, ...] = ("blocklisted_ip", "velocity_burst", "high_value_luxury")
PATTERNS: tuple[Pattern, ...] = ("normal", *FRAUD_PATTERNS)

# Documentation ranges (RFC 5737, RFC 3849): never routed on the internet, so blocking them
# cannot hurt real traffic, and ordinary simulated users never draw addresses from them.
DEFAULT_BLOCKED_NETWORKS: tuple[str, ...] = ("203.0.113.0/24", "2001:db8:bad::/48")

BURST_MIN, BURST_MAX = 10, 15
_BURST_MEAN = (BURST_MIN + BURST_MAX) / 2

# Rough value of one unit in US dollars: only to make amounts plausible in each currency.
_USD_PER_UNIT: dict[str, float] = {
    "INR": 0.012,
    "USD": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "JPY": 0.0067,
    "SGD": 0.74,
    "AUD": 0.66,
    "CAD": 0.73,
    "CHF": 1.13,
    "AED": 0.2723,
}
# Where the simulated users live, by weight.
_HOME_CURRENCIES: tuple[tuple[str, float], ...] = (
    ("INR", 0.34),
    ("USD", 0.22),
    ("EUR", 0.14),
    ("GBP", 0.09),
    ("JPY", 0.08),
    ("SGD", 0.04),
    ("AUD", 0.03),
    ("CAD", 0.03),
    ("CHF", 0.02),
    ("AED", 0.01),
)
_EVERYDAY_MERCHANTS: tuple[tuple[str, float], ...] = (
    ("groceries", 0.22),
    ("restaurants", 0.16),
    ("fuel", 0.09),
    ("online_services", 0.1),
    ("apparel", 0.09),
    ("electronics", 0.07),
    ("travel", 0.06),
    ("pharmacy", 0.06),
    ("utilities", 0.06),
    ("entertainment", 0.06),
    ("luxury_goods", 0.01),
    ("gambling", 0.01),
    ("crypto", 0.01),
)
_BURST_MERCHANTS: tuple[str, ...] = ("gift_cards", "electronics", "digital_goods")
# First octets of unicast, publicly routed IPv4 space (no private, loopback, CGNAT,
# link-local, multicast or documentation ranges).
_PUBLIC_V4_FIRST_OCTETS: tuple[int, ...] = (
    5, 12, 23, 31, 37, 41, 45, 49, 52, 61, 77, 81, 89, 91, 101, 106, 115, 117, 122,
    139, 151, 157, 182, 185, 196, 212, 217,
)  # fmt: skip
_PUBLIC_V6_PREFIXES: tuple[int, ...] = (0x2A00, 0x2A02, 0x2600, 0x2607, 0x2401, 0x2804)

_body_encoder = msgspec.json.Encoder(decimal_format="number")


class TrafficProfile(msgspec.Struct, frozen=True, kw_only=True):
    """What to generate: how many ordinary users (fraud targets another ``users // 5``
    accounts, at least one), the share of transactions (0–1) that belong to fraud
    patterns, and the networks the blocklisted-IP pattern draws from."""

    users: int = 500
    fraud_share: float = 0.1
    blocked_networks: tuple[str, ...] = DEFAULT_BLOCKED_NETWORKS

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError("users: must be at least 1")
        if not 0.0 <= self.fraud_share <= 1.0:
            raise ValueError("fraud_share: must be between 0 and 1")
        if not self.blocked_networks:
            raise ValueError("blocked_networks: need at least one network")
        for text in self.blocked_networks:
            ipaddress.ip_network(text, strict=True)  # ValueError names the bad network


class SimulatedTxn(msgspec.Struct, frozen=True, kw_only=True):
    """One transaction to send: its position, the pattern and incident it belongs to, and
    the exact JSON body of ``POST /transactions``."""

    index: int
    txn_id: uuid.UUID
    pattern: Pattern
    incident: int  # consecutive transactions of one velocity burst share an incident
    body: bytes


class _User(msgspec.Struct, frozen=True):
    user_id: str
    currency: str
    ips: tuple[str, ...]


class _Body(msgspec.Struct, frozen=True):
    txn_id: str
    user_id: str
    amount: Decimal
    currency: str
    merchant_type: str
    source_ip: str
    status: str = "PENDING"


def generate(profile: TrafficProfile, seed: int) -> Iterator[SimulatedTxn]:
    """The endless transaction sequence for ``profile`` and ``seed`` (take as many as needed).

    Deterministic: the same arguments always yield the same transactions, byte for byte.
    """
    return _Generator(profile, seed).run()


class _Generator:
    __slots__ = ("_blocked", "_index", "_profile", "_rng", "_users", "_victims")

    def __init__(self, profile: TrafficProfile, seed: int) -> None:
        self._profile = profile
        self._rng = random.Random(seed)
        self._blocked = [ipaddress.ip_network(n, strict=True) for n in profile.blocked_networks]
        # Names carry a seed-derived tag: runs with different seeds use different users,
        # so one run's velocity history does not leak into the next run's decisions.
        tag = f"{self._rng.getrandbits(24):06x}"
        self._users = [self._new_user(f"user_{tag}_{n:05d}") for n in range(profile.users)]
        # Fraud hits other accounts than the ordinary traffic: a burst or a 50,000 USD
        # purchase rightly makes the same user's next purchases look suspicious for a
        # while, which would blur the false-positive count of ordinary traffic.
        self._victims = [
            self._new_user(f"user_{tag}_{n:05d}")
            for n in range(profile.users, profile.users + max(1, profile.users // 5))
        ]
        self._index = 0

    def run(self) -> Iterator[SimulatedTxn]:
        rng, f = self._rng, self._profile.fraud_share
        # Incident weights chosen so each fraud pattern gets f/3 of the *transactions* in
        # expectation: a burst incident carries _BURST_MEAN transactions.
        weights = [1.0 - f, f / 3, f / 3 / _BURST_MEAN, f / 3]
        incident = 0
        while True:
            kind = rng.choices(PATTERNS, weights)[0]
            yield from self._incident(kind, incident)
            incident += 1

    def _incident(self, kind: Pattern, incident: int) -> Iterator[SimulatedTxn]:
        rng = self._rng
        user = rng.choice(self._users if kind == "normal" else self._victims)
        if kind == "normal":
            merchant = _weighted(rng, _EVERYDAY_MERCHANTS)
            yield self._txn(kind, incident, user, self._everyday_amount(user), merchant,
                            rng.choice(user.ips))  # fmt: skip
        elif kind == "blocklisted_ip":
            merchant = _weighted(rng, _EVERYDAY_MERCHANTS)
            ip = _address_in(rng, rng.choice(self._blocked))
            yield self._txn(kind, incident, user, self._everyday_amount(user), merchant, ip)
        elif kind == "high_value_luxury":
            amount = self._amount(user.currency, rng.uniform(15_000, 120_000))
            yield self._txn(kind, incident, user, amount, "luxury_goods", rng.choice(user.ips))
        else:
            # Account takeover: one attacker address, mid-sized amounts. Each stays below
            # every high-value threshold (INR's is the lowest, ~1,200 USD), but ten of them
            # add up to more than 5,000 USD: a velocity pattern, not a big-ticket one.
            ip = _public_v4(rng)
            merchant = rng.choice(_BURST_MERCHANTS)
            for _ in range(rng.randint(BURST_MIN, BURST_MAX)):
                amount = self._amount(user.currency, rng.uniform(550, 1_100))
                yield self._txn(kind, incident, user, amount, merchant, ip)

    def _txn(
        self, kind: Pattern, incident: int, user: _User, amount: Decimal, merchant: str, ip: str
    ) -> SimulatedTxn:
        txn_id = uuid.UUID(int=self._rng.getrandbits(128), version=4)
        body = _Body(str(txn_id), user.user_id, amount, user.currency, merchant, ip)
        txn = SimulatedTxn(
            index=self._index, txn_id=txn_id, pattern=kind, incident=incident,
            body=_body_encoder.encode(body),
        )  # fmt: skip
        self._index += 1
        return txn

    def _new_user(self, user_id: str) -> _User:
        rng = self._rng
        currency = _weighted(rng, _HOME_CURRENCIES)
        ips = tuple(
            _public_v6(rng) if rng.random() < 0.15 else _public_v4(rng)
            for _ in range(rng.randint(1, 3))
        )
        return _User(user_id, currency, ips)

    def _everyday_amount(self, user: _User) -> Decimal:
        # Log-normal around 35 USD, capped far below any high-value threshold.
        usd = min(self._rng.lognormvariate(math.log(35), 1.0), 900.0)
        return self._amount(user.currency, max(usd, 0.5))

    @staticmethod
    def _amount(currency: str, usd: float) -> Decimal:
        exponent = Decimal(1).scaleb(-MINOR_UNITS[currency])
        return Decimal(usd / _USD_PER_UNIT[currency]).quantize(exponent, ROUND_HALF_EVEN)


def _weighted(rng: random.Random, table: Sequence[tuple[str, float]]) -> str:
    return rng.choices([name for name, _ in table], [w for _, w in table])[0]


def _address_in(rng: random.Random, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    if network.num_addresses <= 2:
        return str(network.network_address)
    # Skip the network and broadcast addresses: they look odd as a client address.
    offset = rng.randrange(1, min(network.num_addresses - 1, 2**64))
    return str(network.network_address + offset)


def _public_v4(rng: random.Random) -> str:
    first = rng.choice(_PUBLIC_V4_FIRST_OCTETS)
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _public_v6(rng: random.Random) -> str:
    prefix = rng.choice(_PUBLIC_V6_PREFIXES)
    return str(ipaddress.IPv6Address((prefix << 112) | rng.getrandbits(112)))
