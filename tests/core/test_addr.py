"""``stack.addr``: text addresses are parsed once and remembered (a bounded cache)."""

from __future__ import annotations

import ipaddress

import pytest

from aionetstack.errors import InvalidArgument
from aionetstack.stack import addr
from aionetstack.stack.addr import to_bytes


@pytest.mark.parametrize("text", ["198.18.0.2", " 198.18.0.2 ", "fd00::1", "[fd00::1]",
                                  "fe80::1%eth0", "::ffff:1.2.3.4"])
def test_a_remembered_text_converts_as_the_first_time(text: str) -> None:
    addr._parsed.clear()
    expected = ipaddress.ip_address(text.strip().strip("[]").split("%")[0]).packed
    assert to_bytes(text) == expected  # parsed
    assert addr._parsed[text] == expected
    assert to_bytes(text) == expected  # remembered


@pytest.mark.parametrize("text", ["198.18.0.256", "nonsense", "01.2.3.4", ""])
def test_invalid_text_raises_every_time_and_is_not_remembered(text: str) -> None:
    for _ in range(2):
        with pytest.raises(InvalidArgument):
            to_bytes(text)
    assert text not in addr._parsed


def test_the_cache_is_bounded_and_stays_correct_when_emptied() -> None:
    addr._parsed.clear()
    for i in range(addr._PARSED_MAX + 10):
        a = ipaddress.IPv4Address(0xC6120000 + i)
        assert to_bytes(str(a)) == a.packed
    assert 0 < len(addr._parsed) <= addr._PARSED_MAX
    assert to_bytes("198.18.0.7") == bytes([198, 18, 0, 7])
