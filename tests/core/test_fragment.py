"""IP fragment reassembly (RFC 791, 815, 8200 §4.5, 5722) and output fragmentation planning."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aionetstack.network import fragment as fragment_mod
from aionetstack.network.fragment import STAT_KEYS, Reassembler, fragment_payload

KEY = ("10.0.0.1", "10.0.0.2", 17, 0x1234)
KEY6 = ("fe80::1", "fe80::2", 0xDEADBEEF)
HDR = bytes(range(20))


def frags(payload: bytes, size: int) -> list[tuple[int, bytes, bool]]:
    """Split ``payload`` into ``size``-byte pieces: (offset, data, more)."""
    out = []
    for off in range(0, len(payload), size):
        chunk = payload[off : off + size]
        out.append((off, chunk, off + size < len(payload)))
    return out


def feed(
    r: Reassembler, key: object, pieces: list[tuple[int, bytes, bool]], now: float = 0.0
) -> list[bytes | None]:
    results: list[bytes | None] = []
    for off, data, more in pieces:
        results.append(r.add(key, off, more, data, now, HDR if off == 0 else None))
    return results


def payload_of(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


# -- basic orders ---------------------------------------------------------------------------


@pytest.mark.parametrize("ipv6", [False, True])
def test_in_order(ipv6: bool) -> None:
    r = Reassembler(ipv6=ipv6)
    payload = payload_of(3000)
    results = feed(r, KEY, frags(payload, 1480))
    assert results[:-1] == [None, None]
    assert results[-1] == payload
    assert type(results[-1]) is bytes
    assert len(r) == 0
    assert r.pending_bytes == 0
    assert r.next_deadline() is None
    s = r.stats()
    assert s["received"] == 3
    assert s["reassembled"] == 1


def test_reverse_order() -> None:
    r = Reassembler()
    payload = payload_of(5000, 1)
    pieces = frags(payload, 1000)[::-1]
    results = feed(r, KEY, pieces)
    assert results[:-1] == [None] * 4
    assert results[-1] == payload
    assert len(r) == 0 and r.pending_bytes == 0


def test_pending_accounting_includes_header() -> None:
    r = Reassembler()
    payload = payload_of(40)
    assert r.add(KEY, 16, True, payload[16:32], 0.0) is None
    assert r.pending_bytes == 16
    assert len(r) == 1
    assert r.add(KEY, 0, True, payload[:16], 0.0, HDR) is None
    assert r.pending_bytes == 32 + len(HDR)
    assert r.add(KEY, 32, False, payload[32:], 0.0) == payload
    assert r.pending_bytes == 0


def test_interleaved_datagrams_are_kept_apart() -> None:
    r = Reassembler()
    a, b = payload_of(800, 1), payload_of(800, 2)
    fa, fb = frags(a, 200), frags(b, 200)
    out = []
    for pa, pb in zip(fa, fb, strict=True):
        out.append(r.add("a", pa[0], pa[2], pa[1], 0.0))
        out.append(r.add("b", pb[0], pb[2], pb[1], 0.0))
    assert out[-2:] == [a, b]
    assert all(x is None for x in out[:-2])


def test_memoryview_input_is_copied() -> None:
    r = Reassembler()
    payload = payload_of(64)
    buf = bytearray(2048)
    for off, data, more in frags(payload, 16)[::-1]:
        buf[: len(data)] = data
        result = r.add(KEY, off, more, memoryview(buf)[: len(data)], 0.0)
        buf[:] = bytes(len(buf))  # the receive buffer is reused
    assert result == payload


def test_atomic_fragment_is_processed_in_isolation() -> None:
    """RFC 6946: offset 0 and M=0 is returned at once and leaves pending state alone."""
    r = Reassembler(ipv6=True)
    assert r.add(KEY6, 8, True, b"x" * 8, 0.0) is None
    assert r.add(KEY6, 0, False, b"atomic", 0.0) == b"atomic"
    assert r.add(KEY6, 0, False, b"", 0.0) == b""
    assert len(r) == 1
    assert r.pending_bytes == 8
    assert r.stats()["overlap"] == 0


@pytest.mark.parametrize("ipv6", [False, True])
def test_tiny_8_byte_fragments(ipv6: bool) -> None:
    r = Reassembler(ipv6=ipv6)
    payload = payload_of(1024 + 5, 3)
    pieces = frags(payload, 8)
    random.Random(7).shuffle(pieces)
    results = feed(r, KEY, pieces)
    assert results[-1] == payload
    assert all(x is None for x in results[:-1])
    assert r.stats()["reassembled"] == 1


# -- property: random fragmentation, permutation and duplicates -------------------------------


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=3000),
    room=st.integers(min_value=8, max_value=700),
    first_extra=st.integers(min_value=0, max_value=40),
    ipv6=st.booleans(),
    data=st.data(),
)
def test_random_fragmentation_permutation_duplicates(
    payload: bytes, room: int, first_extra: int, ipv6: bool, data: st.DataObject
) -> None:
    plan = fragment_payload(len(payload), room + first_extra, room)
    pieces = [(off, payload[off : off + ln], more) for off, ln, more in plan]
    order = data.draw(st.permutations(pieces))
    # Exact duplicates anywhere before the fragment that completes the datagram.
    body = list(order[:-1])
    dups = data.draw(st.lists(st.sampled_from(body), max_size=6)) if body else []
    for d in dups:
        body.insert(data.draw(st.integers(0, len(body))), d)
    seq = [*body, order[-1]]

    r = Reassembler(ipv6=ipv6)
    results = feed(r, KEY, seq, now=1.0)
    assert results[-1] == payload
    assert all(x is None for x in results[:-1])
    s = r.stats()
    assert s["duplicate"] == len(dups)
    assert s["reassembled"] == 1
    assert s["overlap"] == s["bad-fragment"] == s["bad-fragment-length"] == 0
    assert len(r) == 0 and r.pending_bytes == 0 and r.next_deadline() is None


# -- overlaps -----------------------------------------------------------------------------------


def test_exact_duplicate_ignored() -> None:
    r = Reassembler(ipv6=True)
    payload = payload_of(48)
    assert r.add(KEY6, 0, True, payload[:24], 0.0) is None
    assert r.add(KEY6, 0, True, payload[:24], 0.0) is None
    assert r.pending_bytes == 24
    assert r.add(KEY6, 24, False, payload[24:], 0.0) == payload
    assert r.stats()["duplicate"] == 1
    assert r.stats()["overlap"] == 0


def test_teardrop_ipv6_discards_datagram_and_later_fragments() -> None:
    r = Reassembler(ipv6=True, timeout=60.0)
    payload = payload_of(64)
    assert r.add(KEY6, 0, True, payload[:24], 0.0, HDR) is None
    # Second fragment starts inside the first.
    assert r.add(KEY6, 16, True, b"\xff" * 16, 1.0) is None
    s = r.stats()
    assert s["overlap"] == 1
    assert len(r) == 0
    assert r.pending_bytes == 0
    # RFC 5722: fragments not yet received are discarded too, until the timeout.
    for off, data, more in frags(payload, 8):
        assert r.add(KEY6, off, more, data, 2.0, HDR if off == 0 else None) is None
    assert r.pending_bytes == 0 and len(r) == 0
    assert r.stats()["reassembled"] == 0
    # Other keys are unaffected.
    assert feed(r, "other", frags(payload, 16), 3.0)[-1] == payload
    # The tombstone ends silently at the original datagram's deadline.
    assert r.next_deadline() == 60.0
    assert r.expire(60.0) == []
    assert r.stats()["timeout"] == 0
    assert r.next_deadline() is None
    assert feed(r, KEY6, frags(payload, 16), 61.0)[-1] == payload


def test_overlap_ipv4_drops_datagram_but_later_fragments_start_afresh() -> None:
    r = Reassembler()
    payload = payload_of(64)
    assert r.add(KEY, 0, True, payload[:24], 0.0) is None
    assert r.add(KEY, 16, True, payload[16:40], 0.0) is None  # teardrop, even with same bytes
    assert r.stats()["overlap"] == 1
    assert len(r) == 0 and r.pending_bytes == 0
    assert r.next_deadline() is None
    assert feed(r, KEY, frags(payload, 8))[-1] == payload


@pytest.mark.parametrize("ipv6", [False, True])
@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((0, 32), (8, 16)),  # subset
        ((8, 16), (0, 32)),  # superset
        ((16, 32), (8, 24)),  # starts before, ends inside
        ((0, 16), (0, 24)),  # same start, longer
        ((0, 24), (0, 16)),  # same start, shorter
        ((8, 24), (16, 24)),  # same end
    ],
)
def test_non_identical_overlaps_drop(
    ipv6: bool, first: tuple[int, int], second: tuple[int, int]
) -> None:
    r = Reassembler(ipv6=ipv6)
    payload = payload_of(64)
    s1, e1 = first
    s2, e2 = second
    assert r.add(KEY, s1, True, payload[s1:e1], 0.0) is None
    # Identical bytes in the overlapped range still count: only exact duplicates are tolerated.
    assert r.add(KEY, s2, True, payload[s2:e2], 0.0) is None
    assert r.stats()["overlap"] == 1
    assert r.stats()["duplicate"] == 0
    assert len(r) == 0 and r.pending_bytes == 0


@pytest.mark.parametrize("ipv6", [False, True])
def test_same_range_different_bytes_is_overlap(ipv6: bool) -> None:
    r = Reassembler(ipv6=ipv6)
    assert r.add(KEY, 8, True, b"a" * 16, 0.0) is None
    assert r.add(KEY, 8, True, b"b" * 16, 0.0) is None
    assert r.stats()["overlap"] == 1
    assert r.stats()["duplicate"] == 0
    assert len(r) == 0


def test_overlap_with_final_fragment() -> None:
    r = Reassembler(ipv6=True)
    assert r.add(KEY6, 16, False, b"z" * 10, 0.0) is None
    assert r.add(KEY6, 8, True, b"y" * 16, 0.0) is None  # [8,24) overlaps [16,26)
    assert r.stats()["overlap"] == 1


def test_adjacent_fragments_do_not_overlap() -> None:
    r = Reassembler(ipv6=True)
    assert r.add(KEY6, 8, True, b"b" * 8, 0.0) is None
    assert r.add(KEY6, 16, False, b"c" * 3, 0.0) is None
    assert r.add(KEY6, 0, True, b"a" * 8, 0.0) == b"a" * 8 + b"b" * 8 + b"ccc"
    assert r.stats()["overlap"] == 0


@pytest.mark.pure_python  # compiled code inlines the Final constant
def test_tombstone_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fragment_mod, "MAX_TOMBSTONES", 2)
    r = Reassembler(ipv6=True)
    for k in range(4):
        r.add(k, 0, True, b"a" * 16, 0.0)
        r.add(k, 8, True, b"a" * 16, 0.0)
    assert r.stats()["overlap"] == 4
    # Keys 0 and 1 are tombstoned; 2 and 3 were simply dropped and start afresh.
    assert r.add(0, 0, False, b"x", 1.0) == b"x"  # atomic: never blocked
    assert r.add(1, 8, False, b"x", 1.0) is None
    assert len(r) == 0
    assert r.add(2, 8, False, b"x", 1.0) is None
    assert len(r) == 1


# -- final-fragment consistency -------------------------------------------------------------


@pytest.mark.parametrize("ipv6", [False, True])
def test_conflicting_last_fragments(ipv6: bool) -> None:
    r = Reassembler(ipv6=ipv6)
    assert r.add(KEY, 16, False, b"a" * 10, 0.0) is None
    assert r.add(KEY, 32, False, b"b" * 10, 0.0) is None  # a different end
    assert r.stats()["bad-fragment"] == 1
    assert len(r) == 0 and r.pending_bytes == 0


def test_same_last_fragment_twice_is_a_duplicate() -> None:
    r = Reassembler()
    assert r.add(KEY, 16, False, b"a" * 10, 0.0) is None
    assert r.add(KEY, 16, False, b"a" * 10, 0.0) is None
    assert r.stats()["duplicate"] == 1
    assert r.stats()["bad-fragment"] == 0
    assert len(r) == 1


def test_data_past_established_end() -> None:
    r = Reassembler()
    assert r.add(KEY, 16, False, b"a" * 8, 0.0) is None  # length 24
    assert r.add(KEY, 24, True, b"b" * 8, 0.0) is None
    assert r.stats()["bad-fragment"] == 1
    assert len(r) == 0


def test_last_fragment_before_data_already_held() -> None:
    r = Reassembler()
    assert r.add(KEY, 32, True, b"a" * 8, 0.0) is None
    assert r.add(KEY, 8, False, b"b" * 8, 0.0) is None  # ends at 16 < 40
    assert r.stats()["bad-fragment"] == 1
    assert len(r) == 0 and r.pending_bytes == 0


def test_middle_fragment_ending_at_established_end() -> None:
    r = Reassembler()
    payload = payload_of(40)
    assert r.add(KEY, 32, False, payload[32:], 0.0) is None
    assert r.add(KEY, 0, True, payload[:32], 0.0) == payload


# -- lengths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("ipv6", [False, True])
def test_non_multiple_of_8_middle_fragment(ipv6: bool) -> None:
    r = Reassembler(ipv6=ipv6)
    assert r.add(KEY, 0, True, b"a" * 16, 0.0) is None
    assert r.add(KEY, 16, True, b"b" * 12, 0.0) is None
    assert r.stats()["bad-fragment-length"] == 1
    # Only the bad fragment is dropped; the datagram survives and completes.
    assert len(r) == 1 and r.pending_bytes == 16
    assert r.add(KEY, 16, False, b"c" * 12, 0.0) == b"a" * 16 + b"c" * 12


def test_empty_fragments_are_bad() -> None:
    r = Reassembler()
    assert r.add(KEY, 0, True, b"", 0.0) is None
    assert r.add(KEY, 8, False, b"", 0.0) is None
    assert r.stats()["bad-fragment-length"] == 2
    assert len(r) == 0


def test_offset_must_be_multiple_of_8() -> None:
    r = Reassembler()
    with pytest.raises(ValueError):
        r.add(KEY, 4, True, b"a" * 8, 0.0)
    with pytest.raises(ValueError):
        r.add(KEY, -8, True, b"a" * 8, 0.0)


def test_too_big() -> None:
    r = Reassembler()
    # Ping of death: last fragment at the largest offset carrying more than fits.
    assert r.add(KEY, 65528, False, b"x" * 16, 0.0) is None
    assert r.stats()["too-big"] == 1
    assert len(r) == 0
    # A datagram in progress is killed by a fragment running past the limit.
    assert r.add(KEY, 0, True, b"a" * 1480, 0.0) is None
    assert r.add(KEY, 65000, True, b"b" * 1480, 0.0) is None
    assert r.stats()["too-big"] == 2
    assert len(r) == 0 and r.pending_bytes == 0
    # Exactly max_datagram is fine.
    r2 = Reassembler(max_datagram=100)
    assert r2.add(KEY, 0, True, b"a" * 96, 0.0) is None
    assert r2.add(KEY, 96, False, b"b" * 4, 0.0) == b"a" * 96 + b"b" * 4
    assert r2.add(KEY, 96, False, b"b" * 5, 0.0) is None
    assert r2.stats()["too-big"] == 1


def test_fragment_count_cap() -> None:
    r = Reassembler(max_fragments=4)
    for i in range(4):
        assert r.add(KEY, 8 * i, True, b"a" * 8, 0.0) is None
    assert len(r) == 1
    assert r.add(KEY, 32, False, b"b" * 8, 0.0) is None
    assert r.stats()["too-many-fragments"] == 1
    assert len(r) == 0 and r.pending_bytes == 0
    # A datagram within the cap completes.
    results = feed(r, KEY, frags(b"c" * 32, 8))
    assert results[-1] == b"c" * 32


def test_tiny_fragment_flood_is_bounded_and_fast() -> None:
    r = Reassembler()
    pieces = frags(bytes(65000), 8)  # 8125 pieces
    random.Random(1).shuffle(pieces)
    results = feed(r, KEY, pieces)
    assert all(x is None for x in results)
    s = r.stats()
    assert s["too-many-fragments"] >= 1
    assert r.pending_bytes <= 1024 * 8 + len(HDR)


# -- timeout ------------------------------------------------------------------------------------


def test_timeout_deadline_and_expire() -> None:
    r = Reassembler(timeout=30.0)
    assert r.next_deadline() is None
    assert r.expire(100.0) == []
    assert r.add("a", 0, True, b"a" * 8, 1.0, HDR) is None
    assert r.next_deadline() == 31.0
    assert r.add("b", 8, True, b"b" * 8, 5.0, HDR) is None  # header ignored off offset 0
    assert r.next_deadline() == 31.0
    # A later fragment does not extend the deadline (it runs from the first fragment).
    assert r.add("a", 8, True, b"a" * 8, 20.0) is None
    assert r.next_deadline() == 31.0
    assert r.expire(30.9) == []
    assert r.expire(31.0) == [("a", HDR)]
    assert r.next_deadline() == 35.0
    assert len(r) == 1
    assert r.expire(1000.0) == [("b", None)]
    assert r.next_deadline() is None
    assert len(r) == 0 and r.pending_bytes == 0
    assert r.stats()["timeout"] == 2


def test_header_kept_from_first_offset_zero_fragment() -> None:
    r = Reassembler()
    assert r.add(KEY, 8, True, b"b" * 8, 0.0) is None
    assert r.add(KEY, 0, True, b"a" * 8, 0.0, b"H1") is None
    assert r.add(KEY, 0, True, b"a" * 8, 0.0, b"H2") is None  # duplicate
    assert r.expire(30.0) == [(KEY, b"H1")]


def test_expire_many_in_order() -> None:
    r = Reassembler(timeout=10.0)
    for i in range(5000):
        r.add(i, 0, True, b"x" * 8, i * 0.01)
    expired: list[object] = []
    now = 10.0
    while (d := r.next_deadline()) is not None:
        now = max(now, d)
        expired.extend(k for k, _ in r.expire(now))
        now += 0.5
    assert expired == list(range(5000))
    assert r.pending_bytes == 0


# -- memory cap ---------------------------------------------------------------------------------


def test_memory_cap_evicts_oldest_first() -> None:
    r = Reassembler(max_bytes=100)
    assert r.add("a", 0, True, b"a" * 40, 0.0) is None
    assert r.add("b", 0, True, b"b" * 40, 1.0) is None
    assert r.pending_bytes == 80
    assert r.add("c", 0, True, b"c" * 40, 2.0) is None
    assert r.stats()["evicted"] == 1
    assert r.pending_bytes == 80
    assert len(r) == 2
    assert r.next_deadline() == 31.0  # "b" is now the oldest
    # A fragment for an existing datagram evicts others, never its own datagram.
    assert r.add("c", 40, True, b"c" * 40, 3.0) is None
    assert r.stats()["evicted"] == 2
    assert len(r) == 1 and r.pending_bytes == 80
    assert r.add("c", 80, False, b"c" * 5, 4.0) == b"c" * 85
    assert r.pending_bytes == 0
    assert r.expire(1000.0) == []


def test_memory_cap_evicts_several() -> None:
    r = Reassembler(max_bytes=100)
    for i in range(10):
        r.add(i, 0, True, b"x" * 8, float(i))
    assert r.pending_bytes == 80
    assert r.add("big", 0, True, b"y" * 96, 20.0) is None
    assert r.stats()["evicted"] == 10
    assert len(r) == 1 and r.pending_bytes == 96


def test_memory_cap_fragment_that_cannot_fit() -> None:
    r = Reassembler(max_bytes=64)
    assert r.add("a", 0, True, b"a" * 16, 0.0) is None
    assert r.add("huge", 0, True, b"h" * 72, 0.0) is None  # larger than the whole budget
    assert r.stats()["evicted"] == 1
    assert len(r) == 1 and r.pending_bytes == 16  # "a" was not sacrificed for nothing
    # The datagram's own bytes plus the new fragment exceed the budget: it can never
    # complete, so it goes.
    assert r.add("a", 16, True, b"a" * 56, 0.0) is None
    assert r.stats()["evicted"] == 2
    assert len(r) == 0 and r.pending_bytes == 0


def test_memory_cap_counts_headers() -> None:
    r = Reassembler(max_bytes=64)
    assert r.add("a", 0, True, b"a" * 40, 0.0, bytes(20)) is None
    assert r.pending_bytes == 60
    assert r.add("b", 0, True, b"b" * 8, 1.0) is None
    assert r.stats()["evicted"] == 1
    assert r.pending_bytes == 8


def test_eviction_drops_tombstones_on_the_way() -> None:
    r = Reassembler(ipv6=True, max_bytes=32)
    r.add("t", 0, True, b"a" * 16, 0.0)
    r.add("t", 8, True, b"a" * 16, 0.0)  # tombstoned
    r.add("a", 0, True, b"a" * 24, 1.0)
    r.add("b", 0, True, b"b" * 24, 2.0)
    s = r.stats()
    assert s["evicted"] == 1  # only "a"; the tombstone is not a datagram
    assert len(r) == 1
    assert r.next_deadline() == 32.0


# -- misc ---------------------------------------------------------------------------------------


def test_stats_keys() -> None:
    r = Reassembler()
    assert (
        set(r.stats())
        == set(STAT_KEYS)
        == {
            "received",
            "reassembled",
            "duplicate",
            "overlap",
            "timeout",
            "evicted",
            "too-big",
            "bad-fragment",
            "bad-fragment-length",
            "too-many-fragments",
        }
    )
    assert all(v == 0 for v in r.stats().values())
    r.stats()["received"] = 99  # a copy
    assert r.stats()["received"] == 0


def test_constructor_validation() -> None:
    with pytest.raises(ValueError):
        Reassembler(timeout=0)
    with pytest.raises(ValueError):
        Reassembler(max_bytes=0)


# -- fragment_payload ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    payload_len=st.integers(0, 70000),
    room=st.integers(8, 9000),
    first_room=st.integers(8, 9000),
)
def test_fragment_payload_properties(payload_len: int, first_room: int, room: int) -> None:
    plan = fragment_payload(payload_len, first_room, room)
    assert plan[0][0] == 0
    assert sum(ln for _, ln, _ in plan) == payload_len
    offset = 0
    for idx, (off, ln, more) in enumerate(plan):
        assert off == offset
        offset += ln
        last = idx == len(plan) - 1
        assert more is not last
        assert ln <= (first_room if idx == 0 else room)
        if not last:
            assert ln % 8 == 0 and ln > 0
        assert off % 8 == 0
    assert offset == payload_len
    # Fragments are as large as allowed: the count is minimal for the 8-byte granularity.
    if payload_len > first_room:
        rest = payload_len - (first_room & ~7)
        step = room & ~7
        expected = 1 + (1 if rest <= room else 1 + -(-(rest - room) // step))
        assert len(plan) == expected


def test_fragment_payload_examples() -> None:
    assert fragment_payload(0, 1480, 1480) == [(0, 0, False)]
    assert fragment_payload(1480, 1480, 1480) == [(0, 1480, False)]
    assert fragment_payload(3000, 1480, 1480) == [
        (0, 1480, True),
        (1480, 1480, True),
        (2960, 40, False),
    ]
    # IPv4 with options only in the first fragment (ihl 60 then 20, MTU 1500).
    assert fragment_payload(3000, 1440, 1480) == [
        (0, 1440, True),
        (1440, 1480, True),
        (2920, 80, False),
    ]
    # Non-multiple-of-8 room: non-final slices round down, the final one may use it all.
    assert fragment_payload(20, 13, 13) == [(0, 8, True), (8, 12, False)]


def test_fragment_payload_errors() -> None:
    with pytest.raises(ValueError):
        fragment_payload(-1, 100, 100)
    with pytest.raises(ValueError):
        fragment_payload(100, 7, 100)
    with pytest.raises(ValueError):
        fragment_payload(100, 16, 7)
    assert fragment_payload(5, 7, 7) == [(0, 5, False)]


def test_fragment_payload_roundtrip_through_reassembler() -> None:
    payload = payload_of(9000, 5)
    plan = fragment_payload(len(payload), 1232 - 48, 1232 - 48)
    r = Reassembler(ipv6=True)
    out = None
    for off, ln, more in reversed(plan):
        out = r.add(KEY6, off, more, payload[off : off + ln], 0.0)
    assert out == payload
