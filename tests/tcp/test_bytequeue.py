"""``ByteQueue`` against a ``bytearray`` model, and its zero-copy promises."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from aionetstack.transport.tcp.bytequeue import SMALL, ByteQueue, Pieces

_piece = st.one_of(
    st.binary(max_size=SMALL * 2).map(lambda b: ("bytes", b)),
    st.binary(min_size=SMALL, max_size=SMALL * 3).map(lambda b: ("bytes", b)),
    st.binary(max_size=SMALL * 3).map(lambda b: ("bytearray", b)),
    st.binary(max_size=SMALL * 3).map(lambda b: ("view", b)),
)
_op = st.one_of(
    st.tuples(st.just("append"), _piece),
    st.tuples(st.just("drop"), st.integers(0, SMALL * 4)),
    st.tuples(st.just("pop"), st.integers(-1, SMALL * 4)),
    st.tuples(st.just("pop_chunk"), st.integers(-1, SMALL * 4)),
    st.tuples(st.just("pop_into"), st.integers(0, SMALL * 4)),
    st.tuples(st.just("view"), st.tuples(st.integers(0, SMALL * 6), st.integers(0, SMALL * 4))),
    st.tuples(st.just("peek"), st.integers(-1, SMALL * 4)),
)


@given(st.lists(_op, max_size=60))
def test_bytequeue_behaves_like_a_bytearray_fifo(ops: list[tuple[str, object]]) -> None:
    q = ByteQueue()
    model = bytearray()
    for name, arg in ops:
        if name == "append":
            kind, raw = arg  # type: ignore[misc]
            data: bytes | bytearray | memoryview = (
                raw if kind == "bytes" else bytearray(raw) if kind == "bytearray"
                else memoryview(bytearray(raw)))
            q.append(data)
            model += raw
            if not isinstance(data, bytes):  # the caller may reuse its buffer: a copy is held
                data[:] = b"\xff" * len(data)
        elif name == "drop":
            n = min(arg, len(model))  # type: ignore[call-overload]
            q.drop(n)
            del model[:n]
        elif name in ("pop", "pop_chunk"):
            n = arg  # type: ignore[assignment]
            got = q.pop(n) if name == "pop" else q.pop_chunk(n)
            assert type(got) is bytes
            want_max = len(model) if n < 0 else min(n, len(model))
            if name == "pop":
                assert len(got) == want_max
            else:
                assert 0 < len(got) <= want_max or want_max == 0 == len(got)
            assert got == model[:len(got)]
            del model[:len(got)]
        elif name == "pop_into":
            out = bytearray(arg)  # type: ignore[call-overload]
            n = q.pop_into(out)
            assert n == min(len(out), len(model))
            assert out[:n] == model[:n]
            del model[:n]
        elif name == "view":
            off, n = arg  # type: ignore[misc]
            if off + n <= len(model):
                assert bytes(q.view(off, n)) == model[off:off + n]
        else:
            assert q.peek(arg) == (model if arg < 0 else model[:arg])  # type: ignore[operator]
        assert len(q) == len(model) and bool(q) == bool(model)
        assert bytes(q) == model


def test_large_bytes_are_kept_by_reference_and_handed_out_whole() -> None:
    q = ByteQueue()
    seg = bytes(range(256)) * 256  # 64 KiB
    q.append(seg)
    q.append(memoryview(seg)[:SMALL * 2])  # a read-only view of bytes: no copy either
    v = q.view(100, 1000)
    assert isinstance(v, memoryview) and v.obj is seg  # zero-copy view of one chunk
    del v
    assert q.pop_chunk(1 << 20) is seg  # a whole chunk comes out as the very same object
    assert len(q) == SMALL * 2


def test_pieces_spanning_immutable_chunks_are_views_of_them() -> None:
    q = ByteQueue()
    a, b = bytes(range(256)) * 16, bytes(range(255, -1, -1)) * 16
    q.append(a)
    q.append(b)
    p = q.pieces(100, 5000)
    assert isinstance(p, Pieces) and len(p) == 5000
    assert [v.obj for v in p.parts] == [a, b]  # no copy
    assert bytes(p) == (a + b)[100:5100] == q.view(100, 5000)
    q.append(b"tail")  # a mutable tail: spanning it gives a copy, as view() does
    p2 = q.pieces(len(a) + len(b) - 2, 4)
    assert type(p2) is bytes and p2 == b[-2:] + b"ta"
    assert isinstance(q.pieces(0, 10), memoryview)  # within one chunk: a plain view


def test_small_pieces_share_a_tail_and_views_of_it_are_copies() -> None:
    q = ByteQueue()
    for i in range(1000):
        q.append(bytes([i & 0xFF]))
    assert len(q._chunks) == 1  # one bytearray tail, not a thousand objects
    v = q.view(10, 20)
    assert type(v) is bytes  # never a view that would pin the tail's size
    q.append(b"more")  # the tail can still grow
    assert bytes(q)[-4:] == b"more"


def test_dropping_releases_chunks() -> None:
    q = ByteQueue()
    seg = bytearray(70000)
    q.append(seg)  # copied (a bytearray is mutable)
    q.append(bytes(70000))
    q.drop(70000)
    assert len(q._chunks) == 1 and len(q) == 70000
    q.drop(70000)
    assert not q and q._chunks == []
