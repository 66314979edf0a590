"""GB/T 26875.3 frames: the brief's vectors, ACK/NAK, round trips and the stream deframer."""

from __future__ import annotations

from datetime import datetime

import pytest

from sensors.gb26875.frame import (
    MAX_ADU,
    MAX_FRAME,
    Command,
    Deframer,
    Frame,
    FrameRejection,
    RejectReason,
    ack_for,
    encode,
    nak_for,
)
from tests.support.gb26875_vectors import ACK_LABEL, CENTRE, UITD, VECTORS

HEADER_LABEL = bytes.fromhex("20 3A 09 1A 09 0C")


def one_frame(data: bytes) -> Frame:
    results = Deframer().feed(data)
    assert len(results) == 1
    frame = results[0]
    assert isinstance(frame, Frame), frame
    return frame


def frames_of(results: list[Frame | FrameRejection]) -> list[Frame]:
    return [r for r in results if isinstance(r, Frame)]


# (vector, command, source, destination, ADU length)
HEADERS = [
    (1, Command.SEND_DATA, UITD, CENTRE, 48),
    (2, Command.CONFIRM, CENTRE, UITD, 0),
    (3, Command.DENY, CENTRE, UITD, 0),
    (4, Command.SEND_DATA, UITD, CENTRE, 9),
    (5, Command.SEND_DATA, UITD, CENTRE, 10),
    (6, Command.SEND_DATA, UITD, CENTRE, 4),
    (7, Command.SEND_DATA, UITD, CENTRE, 8),
    (8, Command.REQUEST, CENTRE, UITD, 3),
    (9, Command.RESPONSE, UITD, CENTRE, 9),
    (10, Command.REQUEST, CENTRE, UITD, 3),
    (11, Command.CONTROL, CENTRE, UITD, 3),
    (12, Command.CONTROL, CENTRE, UITD, 8),
    (13, Command.CONTROL, CENTRE, UITD, 3),
]


@pytest.mark.parametrize(("number", "command", "source", "destination", "adu_length"), HEADERS)
def test_vector_headers(number: int, command: Command, source: bytes, destination: bytes,
                        adu_length: int) -> None:
    frame = one_frame(VECTORS[number])
    assert frame.serial == 1
    assert frame.version == (1, 1)
    assert frame.time_label == (ACK_LABEL if number in (2, 3) else HEADER_LABEL)
    assert (frame.command, frame.source, frame.destination) == (command, source, destination)
    assert len(frame.adu) == adu_length


def test_vector_14_other_vendor() -> None:
    frame = one_frame(VECTORS[14])
    assert frame.version == (2, 3)  # major version 2: the deframer must not insist on 1
    assert frame.time_label == bytes.fromhex("35 12 0F 0F 06 15")
    assert frame.source == bytes.fromhex("15 27 08 20 20 FE")
    assert frame.destination == bytes.fromhex("00 00 00 00 00 01")
    assert frame.command == Command.SEND_DATA
    assert len(frame.adu) == 48


@pytest.mark.parametrize("number", sorted(VECTORS))
def test_encode_reproduces_every_vector(number: int) -> None:
    assert encode(one_frame(VECTORS[number])) == VECTORS[number]


def test_ack_and_nak_for_vector_1_are_vectors_2_and_3() -> None:
    upload = one_frame(VECTORS[1])
    assert encode(ack_for(upload, ACK_LABEL)) == VECTORS[2]
    assert encode(nak_for(upload, ACK_LABEL)) == VECTORS[3]
    # The same from a datetime: 2012-09-26 09:58:35.
    assert encode(ack_for(upload, datetime(2012, 9, 26, 9, 58, 35))) == VECTORS[2]


def test_nak_from_a_rejection_header() -> None:
    data = bytearray(VECTORS[1])
    data[-3] ^= 0xFF
    (rejection,) = Deframer().feed(bytes(data))
    assert isinstance(rejection, FrameRejection)
    assert rejection.reason == RejectReason.BAD_CHECKSUM
    assert rejection.header is not None
    assert encode(nak_for(rejection.header, ACK_LABEL)) == VECTORS[3]


def test_frame_rejects_bad_fields_when_built() -> None:
    with pytest.raises(ValueError, match="serial"):
        Frame(70000, (1, 1), HEADER_LABEL, UITD, CENTRE, 2)
    with pytest.raises(ValueError, match="6 bytes"):
        Frame(1, (1, 1), HEADER_LABEL, UITD[:5], CENTRE, 2)
    with pytest.raises(ValueError, match="over 1024"):
        Frame(1, (1, 1), HEADER_LABEL, UITD, CENTRE, 2, bytes(MAX_ADU + 1))


def test_largest_frame_round_trips() -> None:
    frame = Frame(65535, (1, 255), HEADER_LABEL, UITD, CENTRE, 2, bytes(range(256)) * 4)
    data = encode(frame)
    assert len(data) == MAX_FRAME
    assert one_frame(data) == frame


# --- rejections ------------------------------------------------------------------------------

def corrupt(number: int, offset: int, value: int) -> bytes:
    data = bytearray(VECTORS[number])
    data[offset] = value
    return bytes(data)


def test_bad_checksum_skips_the_whole_frame() -> None:
    results = Deframer().feed(corrupt(4, -3, 0x00) + VECTORS[6])
    assert [type(r) for r in results] == [FrameRejection, Frame]
    rejection = results[0]
    assert isinstance(rejection, FrameRejection)
    assert rejection.reason == RejectReason.BAD_CHECKSUM
    assert rejection.size == len(VECTORS[4])
    assert rejection.header is not None
    assert (rejection.header.serial, rejection.header.source) == (1, UITD)


def test_bad_end_resynchronises_on_the_next_start() -> None:
    d = Deframer()
    results = d.feed(corrupt(4, -1, 0x24) + VECTORS[6])
    reasons = [r.reason for r in results if isinstance(r, FrameRejection)]
    assert reasons[0] == RejectReason.BAD_END
    assert set(reasons[1:]) == {RejectReason.GARBAGE}
    assert frames_of(results) == [one_frame(VECTORS[6])]
    assert d.buffered == 0


@pytest.mark.parametrize("command", [0, 7, 127, 128, 255])
def test_unknown_command_is_rejected_with_its_header(command: int) -> None:
    frame = Frame(9, (1, 1), HEADER_LABEL, UITD, CENTRE, command, b"\x01")
    results = Deframer().feed(encode(frame) + VECTORS[6])
    rejection = results[0]
    assert isinstance(rejection, FrameRejection)
    assert rejection.reason == RejectReason.BAD_COMMAND
    assert rejection.header is not None
    assert (rejection.header.serial, rejection.header.command) == (9, command)
    assert frames_of(results) == [one_frame(VECTORS[6])]  # the bad frame was skipped whole


@pytest.mark.parametrize("length", [MAX_ADU + 1, 0x4040, 0xFFFF])
def test_length_over_1024_is_rejected_from_the_header_alone(length: int) -> None:
    head = bytearray(VECTORS[2][:27])
    head[24:26] = length.to_bytes(2, "little")
    d = Deframer()
    results = d.feed(bytes(head))  # no body sent: the length is refused at once
    assert isinstance(results[0], FrameRejection)
    assert results[0].reason == RejectReason.TOO_LONG
    assert results[0].header is not None
    assert results[0].header.adu_length == length
    assert d.buffered < 27
    assert frames_of(d.feed(VECTORS[2])) == [one_frame(VECTORS[2])]


def test_garbage_before_a_frame_is_dropped_and_counted() -> None:
    d = Deframer()
    results = d.feed(b"\x00junk#" + VECTORS[4])
    assert isinstance(results[0], FrameRejection)
    assert results[0].reason == RejectReason.GARBAGE
    assert results[0].header is None
    assert (results[0].size, d.garbage_bytes) == (6, 6)
    assert frames_of(results) == [one_frame(VECTORS[4])]


def test_a_start_after_a_stray_at_sign() -> None:
    # '@@@': the first candidate is wrong; the real frame starts one byte later.
    results = Deframer().feed(b"@" + VECTORS[5])
    assert frames_of(results) == [one_frame(VECTORS[5])]


# --- stream cutting --------------------------------------------------------------------------

STREAM = b"".join(VECTORS[n] for n in sorted(VECTORS))
EXPECTED = [one_frame(VECTORS[n]) for n in sorted(VECTORS)]


def test_merged_frames_in_one_segment() -> None:
    d = Deframer()
    assert d.feed(STREAM) == EXPECTED
    assert (d.buffered, d.garbage_bytes) == (0, 0)


@pytest.mark.parametrize("number", sorted(VECTORS))
def test_every_vector_split_at_every_byte(number: int) -> None:
    data = VECTORS[number]
    for cut in range(1, len(data)):
        d = Deframer()
        first = d.feed(data[:cut])
        assert first == []
        assert d.buffered == cut
        assert d.feed(data[cut:]) == [one_frame(data)]


def test_merged_with_garbage_and_split_everywhere() -> None:
    garbage = b"\x00\x23\x23 noise \xff\x40"  # ends in '@': a stray half-start
    data = garbage + VECTORS[1] + garbage + VECTORS[4] + b"##" + VECTORS[13]
    expected = [one_frame(VECTORS[n]) for n in (1, 4, 13)]
    for cut in range(len(data) + 1):
        d = Deframer()
        results = d.feed(data[:cut]) + d.feed(data[cut:])
        assert frames_of(results) == expected
        # Every byte is in a frame or in exactly one rejection; here the stray '@' goes with a
        # TOO_LONG candidate ('@@@' read one byte early), the rest is garbage.
        rejections = [r for r in results if isinstance(r, FrameRejection)]
        assert sum(r.size for r in rejections) == len(data) - sum(len(encode(f)) for f in expected)
        assert d.garbage_bytes == sum(r.size for r in rejections
                                      if r.reason == RejectReason.GARBAGE)
        assert d.buffered == 0


def test_one_byte_at_a_time() -> None:
    d = Deframer()
    results: list[Frame | FrameRejection] = []
    for byte in STREAM:
        results += d.feed(bytes((byte,)))
        assert d.buffered < MAX_FRAME
    assert results == EXPECTED
