"""The ingest session's sans-IO MQTT codec (gateway/ingest/mqttcodec.py): any bytes in any
chunking give packets or a precise error, never an unbounded buffer."""

from __future__ import annotations

import itertools
import struct

import mqtt5
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.ingest import mqttcodec as codec
from gateway.ingest.mqttcodec import (
    MQTT5,
    MQTT311,
    CodecError,
    Decoder,
    MalformedPacket,
    PacketTooLarge,
    ProtocolViolation,
    Publish,
)

topics = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                 min_size=1, max_size=40)
messages = st.lists(st.tuples(topics, st.binary(max_size=300), st.sampled_from([0, 1]),
                              st.booleans()), min_size=1, max_size=30)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def _decode_all(dec: Decoder, chunks: list[bytes]) -> list[codec.Packet]:
    out: list[codec.Packet] = []
    for chunk in chunks:
        out.extend(dec.feed(chunk, 7, 3))
    return out


@settings(max_examples=200, deadline=None)
@given(messages, st.lists(st.integers(min_value=0), max_size=20),
       st.sampled_from([MQTT5, MQTT311]))
def test_publishes_survive_any_chunking(msgs: list[tuple[str, bytes, int, bool]],
                                        cuts: list[int], version: int) -> None:
    stream = b"".join(codec.encode_publish(t, p, qos=q, retain=r, packet_id=i + 1 if q else 0,
                                           version=version)
                      for i, (t, p, q, r) in enumerate(msgs))
    dec = Decoder(version=version)
    got = _decode_all(dec, _chunks(stream, cuts))
    assert dec.buffered == 0
    assert [(p.topic, p.payload, p.qos, p.mid, p.retain) for p in got
            if isinstance(p, Publish)] == [
        (t, p, q, i + 1 if q else 0, r) for i, (t, p, q, r) in enumerate(msgs)]
    assert all(isinstance(p, Publish) and (p.received_at_ms, p.generation) == (7, 3)
               for p in got)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=10),
       st.sampled_from([MQTT5, MQTT311]))
def test_any_bytes_give_packets_or_a_precise_error(data: bytes, cuts: list[int],
                                                   version: int) -> None:
    dec = Decoder(version=version, max_packet=256)
    error: CodecError | None = None
    try:
        _decode_all(dec, _chunks(data, cuts))
    except CodecError as exc:
        error = exc
    if error is not None:
        assert str(error)
        assert error.reason_code in (0x81, 0x82, 0x95)
        return
    # Whatever is held back is one incomplete packet: header (≤ 5 bytes) + at most max_packet.
    assert dec.buffered <= 5 + 256


def test_the_hot_path_agrees_with_the_mqtt5_package() -> None:
    """Our PUBLISH decode against the Rust codec the issue asked us to measure."""
    packet = mqtt5.PublishPacket(topic="parks/a/b/wp-1/telemetry", payload=b'{"v":1}',
                                 qos=mqtt5.QoS.AT_LEAST_ONCE, packet_id=513, retain=True).write()
    [msg] = Decoder().feed(packet)
    assert isinstance(msg, Publish)
    assert (msg.topic, msg.payload, msg.qos, msg.mid, msg.retain, msg.properties) == (
        "parks/a/b/wp-1/telemetry", b'{"v":1}', 1, 513, True, None)
    with_props = mqtt5.PublishPacket(topic="t", payload=b"x", qos=mqtt5.QoS.AT_LEAST_ONCE,
                                     packet_id=2, content_type="application/json").write()
    [msg] = Decoder().feed(with_props)
    assert isinstance(msg, Publish)
    assert msg.payload == b"x"
    assert msg.properties is not None     # kept raw, only because there are some


def test_pubacks_of_a_batch_are_one_buffer_the_broker_can_read() -> None:
    data = codec.encode_pubacks([1, 2, 65535])
    assert data == b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\xff\xff"
    view, pids = memoryview(data), []
    while view:
        packet, used = mqtt5.read(view)
        assert isinstance(packet, mqtt5.PubAckPacket)
        pids.append(packet.packet_id)
        view = view[used:]
    assert pids == [1, 2, 65535]


def test_connack_and_suback_with_properties() -> None:
    connack = mqtt5.ConnAckPacket(session_present=True, receive_max=20,
                                  server_keep_alive=15).write()
    suback = mqtt5.SubAckPacket(packet_id=9, reason_codes=[
        mqtt5.SubAckReasonCode.GRANTED_QOS_AT_LEAST_ONCE,
        mqtt5.SubAckReasonCode.NOT_AUTHORIZED]).write()
    ack, sub = Decoder().feed(connack + suback)
    assert ack == codec.ConnAck(True, 0, {0x21: 20, 0x13: 15})
    assert sub == codec.SubAck(9, (1, 0x87))


def test_a_311_broker_refusing_mqtt5_is_understood() -> None:
    # An MQTT 3.1.1 broker answers an MQTT 5 CONNECT with return code 1 (bad protocol level).
    [ack] = Decoder(version=MQTT5).feed(b"\x20\x02\x00\x01")
    assert ack == codec.ConnAck(False, 0x84)
    assert codec.reason_text(0x84) == "Unsupported protocol version"


@pytest.mark.parametrize(("data", "error", "words"), [
    (b"\x36\x05\x00\x01a\x00\x01", MalformedPacket, "QoS 3"),
    (b"\x34\x06\x00\x01a\x00\x01\x00", ProtocolViolation, "QoS 2"),
    (b"\x32\x06\x00\x01a\x00\x00\x00", MalformedPacket, "packet identifier 0"),
    (b"\x32\x04\x00\x09ab", MalformedPacket, "runs past the end"),
    (b"\x30\xff\xff\xff\xff\x01", MalformedPacket, "longer than 4 bytes"),
    (b"\x30\xff\xff\x7f", PacketTooLarge, "over the limit"),
    (b"\x10\x00", ProtocolViolation, "CONNECT"),
    (b"\xf0\x00", ProtocolViolation, "AUTH"),
    (b"\x41\x02\x00\x01", MalformedPacket, "flags"),
    (b"\xd0\x01\x00", MalformedPacket, "PINGRESP with a body"),
    (b"\x32\x05\x00\x00\x00\x01\x00", ProtocolViolation, "empty topic"),
    (b"\x20\x03\x00\x00\x05", MalformedPacket, "properties"),
])
def test_malformed_packets_have_precise_errors(data: bytes, error: type[CodecError],
                                               words: str) -> None:
    with pytest.raises(error, match=words):
        Decoder(version=MQTT5, max_packet=1 << 16).feed(data)


def test_connect_carries_session_receive_maximum_and_will() -> None:
    data = codec.encode_connect(client_id="gw", version=MQTT5, keepalive=30, clean_start=False,
                                username="u", password=b"p",
                                will=codec.WillMessage("s", b"offline"), session_expiry=60,
                                receive_maximum=100, maximum_packet_size=1 << 20)
    assert data[0] == 0x10
    flags = data[data.index(b"MQTT") + 5]
    assert flags == 0x80 | 0x40 | 0x20 | 0x08 | 0x04   # user, password, will retain/QoS 1/flag
    assert struct.pack("!BH", 0x21, 100) in data
    assert struct.pack("!BI", 0x11, 60) in data
    v311 = codec.encode_connect(client_id="gw", version=MQTT311, keepalive=30,
                                clean_start=False)
    at = v311.index(b"MQTT")
    assert v311[at + 4:at + 6] == b"\x04\x00"      # level 4, clean session off
