"""Hypothesis strategies and helpers shared by the wire tests (imported as a plain module)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from aionetstack.wire.errors import MalformedPacket

REASONS = frozenset(
    {
        "truncated",
        "bad-length",
        "bad-checksum",
        "bad-option",
        "bad-version",
        "bad-header",
        "unsupported",
    }
)

# Shared settings: enough examples to be meaningful while the suite stays fast.  Set
# WIRE_EXAMPLES=5000 (say) for a deeper local run.
_SCALE = int(os.environ.get("WIRE_EXAMPLES", "0"))
PROPERTY = settings(
    max_examples=_SCALE or 150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
FUZZ = settings(
    max_examples=_SCALE or 300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

ip4 = st.binary(min_size=4, max_size=4)
ip6 = st.binary(min_size=16, max_size=16)
macs = st.binary(min_size=6, max_size=6)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
payloads = st.binary(max_size=96)


def a4(b: bytes) -> str:
    return str(ipaddress.IPv4Address(b))


def a6(b: bytes) -> str:
    return str(ipaddress.IPv6Address(b))


def p4(s: str) -> bytes:
    return ipaddress.IPv4Address(s).packed


def p6(s: str) -> bytes:
    return ipaddress.IPv6Address(s).packed


def mac_str(b: bytes) -> str:
    return b.hex(":")


def mac_bytes(s: str) -> bytes:
    return bytes.fromhex(s.replace(":", ""))


def expect_malformed(
    parse: Callable[[memoryview], Any], data: bytes, reason: str | None = None
) -> MalformedPacket:
    """``parse(memoryview(data))`` must raise MalformedPacket (with ``reason`` if given)."""
    with pytest.raises(MalformedPacket) as info:
        parse(memoryview(data))
    assert info.value.reason in REASONS
    if reason is not None:
        assert info.value.reason == reason, info.value
    return info.value


def every_truncation_malformed(
    parse: Callable[[memoryview], Any], data: bytes, upto: int | None = None
) -> None:
    """Every strict prefix of ``data`` (shorter than ``upto``) must raise MalformedPacket."""
    for n in range(len(data) if upto is None else upto):
        expect_malformed(parse, data[:n])


def only_malformed(parse: Callable[[memoryview], Any], data: bytes) -> None:
    """Parsing arbitrary bytes may succeed or raise MalformedPacket -- nothing else."""
    try:
        parse(memoryview(data))
    except MalformedPacket as exc:
        assert exc.reason in REASONS, exc
