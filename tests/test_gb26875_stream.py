"""Property tests of the GB/T 26875.3 deframer: any bytes in any chunking give frames or
rejections, never an exception, and the buffer stays bounded."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.gb26875.adu import parse_adu
from sensors.gb26875.frame import (
    MAX_BUFFER,
    MAX_FRAME,
    Deframer,
    Frame,
    FrameRejection,
    encode,
)
from tests.support.gb26875_vectors import VECTORS

VECTOR_LIST = [VECTORS[n] for n in sorted(VECTORS)]

# Bytes rich in the characters that matter: starts, ends and plausible small lengths.
noisy = st.binary(max_size=3000) | st.lists(
    st.sampled_from([b"@", b"@@", b"#", b"##", b"\x00", b"\x04", b"\xff", *VECTOR_LIST]),
    max_size=60).map(b"".join)


def feed_in_chunks(data: bytes, cuts: list[int]) -> tuple[Deframer, list[Frame | FrameRejection]]:
    d = Deframer()
    results: list[Frame | FrameRejection] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in pairwise(points):
        results += d.feed(data[start:end])
        assert d.buffered < MAX_FRAME  # between calls: less than one maximum frame
    return d, results


@settings(max_examples=300, deadline=None)
@given(noisy, st.lists(st.integers(min_value=0), max_size=40))
def test_any_bytes_any_chunking_is_accounted_for(data: bytes, cuts: list[int]) -> None:
    d, results = feed_in_chunks(data, cuts)
    framed = sum(len(encode(r)) for r in results if isinstance(r, Frame))
    dropped = sum(r.size for r in results if isinstance(r, FrameRejection))
    assert framed + dropped + d.buffered == len(data)
    assert d.peak_buffered <= MAX_BUFFER
    for result in results:
        if isinstance(result, Frame):
            parse_adu(result.adu)  # never raises either


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(VECTOR_LIST), min_size=1, max_size=8),
       st.lists(st.binary(max_size=40).filter(lambda b: b"@" not in b), min_size=9, max_size=9),
       st.lists(st.integers(min_value=0), max_size=20))
def test_frames_between_garbage_all_come_out(frames: list[bytes], garbage: list[bytes],
                                             cuts: list[int]) -> None:
    # Garbage without '@' cannot start a candidate, so every frame must be found.
    data = b"".join(g + f for g, f in zip(garbage, frames, strict=False)) + garbage[-1]
    d, results = feed_in_chunks(data, cuts)
    assert [encode(r) for r in results if isinstance(r, Frame)] == frames
    assert d.garbage_bytes == sum(len(g) for g in garbage[:len(frames)]) + len(garbage[-1])


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=1, max_size=20).map(lambda b: b * 500))
def test_a_huge_segment_never_grows_the_buffer_past_the_bound(chunk: bytes) -> None:
    d = Deframer()
    d.feed(chunk * 4)
    assert d.peak_buffered <= MAX_BUFFER
    assert d.buffered < MAX_FRAME


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 0xFFFF), st.tuples(st.integers(0, 255), st.integers(0, 255)),
       st.binary(min_size=6, max_size=6), st.binary(min_size=6, max_size=6),
       st.binary(min_size=6, max_size=6), st.integers(1, 6), st.binary(max_size=1024))
def test_encode_then_deframe_round_trips(serial: int, version: tuple[int, int], label: bytes,
                                         source: bytes, destination: bytes, command: int,
                                         adu: bytes) -> None:
    frame = Frame(serial, version, label, source, destination, command, adu)
    assert Deframer().feed(encode(frame)) == [frame]
