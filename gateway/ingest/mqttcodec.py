"""A sans-IO MQTT 5 / 3.1.1 codec for the ingest session: bytes in → packets out, packets →
bytes. No sockets, no clocks, no asyncio: :mod:`gateway.ingest.mqtt` drives it.

Why our own and not paho's parser or the ``mqtt5`` package (a Rust codec): the ingest hot path
is one packet type each way, inbound PUBLISH QoS 1 and outbound PUBACK. Measured in
bench/RESULTS.md ("The MQTT codec"), mqtt5 decodes a PUBLISH about 3 µs faster (under 5 % of
what a message costs end to end), but it speaks MQTT 5 only (the 3.1.1 fallback needs a codec
too) and panics on a topic that is not UTF-8, which the gateway must dead-letter instead; our
PUBACKs of a committed batch are one ``struct.pack`` call, 8-10x cheaper than its objects.
Everything else (CONNACK, SUBACK, DISCONNECT, properties) is rare and decoded plainly.

Bounds: :class:`Decoder` never holds more than one packet's worth of bytes beyond what it was
fed: a remaining length over ``max_packet`` is refused as soon as its header is read
(:class:`PacketTooLarge`), and every length inside a packet is checked against the packet's end
(:class:`MalformedPacket`, with the reason). A broker that sends a packet a client never
receives (CONNECT, SUBSCRIBE, …) or one we did not ask for (QoS 2, AUTH) gets
:class:`ProtocolViolation`. All three are :class:`CodecError`, whose ``reason_code`` is the MQTT 5
DISCONNECT reason to send before closing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gateway.errors import MqttError

MQTT5 = 5
MQTT311 = 4

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"        # normal disconnection (MQTT 5: reason 0 may be omitted)

#: The largest remaining length four varint bytes can hold.
MAX_REMAINING = 268_435_455

# MQTT 5 property identifiers used here (§2.2.2.2).
P_SESSION_EXPIRY = 0x11
P_RECEIVE_MAXIMUM = 0x21
P_MAXIMUM_PACKET_SIZE = 0x27
P_SERVER_KEEP_ALIVE = 0x13
P_REASON_STRING = 0x1F
P_TOPIC_ALIAS = 0x23

# Property value types: 1 byte, 2 bytes, 4 bytes, varint, UTF-8 string, binary, string pair.
_BYTE, _TWO, _FOUR, _VARINT, _STR, _BIN, _PAIR = range(7)
_PROPERTY_TYPES: dict[int, int] = {
    0x01: _BYTE, 0x02: _FOUR, 0x03: _STR, 0x08: _STR, 0x09: _BIN, 0x0B: _VARINT,
    0x11: _FOUR, 0x12: _STR, 0x13: _TWO, 0x15: _STR, 0x16: _BIN, 0x17: _BYTE, 0x18: _FOUR,
    0x19: _BYTE, 0x1A: _STR, 0x1C: _STR, 0x1F: _STR, 0x21: _TWO, 0x22: _TWO, 0x23: _TWO,
    0x24: _BYTE, 0x25: _BYTE, 0x26: _PAIR, 0x27: _FOUR, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}

#: MQTT 5 reason codes a client logs (CONNACK, SUBACK, DISCONNECT), by value.
REASONS: dict[int, str] = {
    0x00: "Success", 0x04: "Disconnect with will message", 0x10: "No matching subscribers",
    0x80: "Unspecified error", 0x81: "Malformed packet", 0x82: "Protocol error",
    0x83: "Implementation specific error", 0x84: "Unsupported protocol version",
    0x85: "Client identifier not valid", 0x86: "Bad user name or password",
    0x87: "Not authorized", 0x88: "Server unavailable", 0x89: "Server busy", 0x8A: "Banned",
    0x8B: "Server shutting down", 0x8C: "Bad authentication method",
    0x8D: "Keep alive timeout", 0x8E: "Session taken over", 0x8F: "Topic filter invalid",
    0x90: "Topic name invalid", 0x93: "Receive maximum exceeded", 0x94: "Topic alias invalid",
    0x95: "Packet too large", 0x96: "Message rate too high", 0x97: "Quota exceeded",
    0x98: "Administrative action", 0x99: "Payload format invalid",
    0x9A: "Retain not supported", 0x9B: "QoS not supported", 0x9C: "Use another server",
    0x9D: "Server moved", 0x9E: "Shared subscriptions not supported",
    0x9F: "Connection rate exceeded", 0xA0: "Maximum connect time",
    0xA1: "Subscription identifiers not supported",
    0xA2: "Wildcard subscriptions not supported",
}
#: MQTT 3.1.1 CONNACK return codes, mapped to the MQTT 5 reason they mean.
_V311_CONNACK = {0: 0x00, 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87}


def reason_text(code: int) -> str:
    return REASONS.get(code, f"reason code {code:#04x}")


class CodecError(MqttError):
    """The broker sent bytes that are not a packet we can accept; the connection must go."""

    reason_code = 0x82


class MalformedPacket(CodecError):
    reason_code = 0x81


class PacketTooLarge(CodecError):
    reason_code = 0x95


class ProtocolViolation(CodecError):
    reason_code = 0x82


# -- packets from the broker -------------------------------------------------------------------

@dataclass(slots=True)
class Publish:
    """An inbound PUBLISH, and what the session needs to acknowledge it later.

    ``mid`` is the packet identifier (0 for QoS 0); ``received_at_ms`` and ``generation`` (the
    connection it came on) are stamped by :meth:`Decoder.feed`, shared by every message of one
    read. ``properties`` holds the raw MQTT 5 property bytes, only when the packet has any: the
    ingest path never needs them, so no object is built per message.
    """

    topic: str
    payload: bytes
    qos: int
    mid: int
    retain: bool
    received_at_ms: int = 0
    generation: int = 0
    dup: bool = False
    properties: bytes | None = None


@dataclass(frozen=True, slots=True)
class ConnAck:
    session_present: bool
    reason_code: int                 # MQTT 5 meaning, also for a 3.1.1 return code
    properties: dict[int, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PubAck:
    packet_id: int
    reason_code: int = 0


@dataclass(frozen=True, slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class UnsubAck:
    packet_id: int


@dataclass(frozen=True, slots=True)
class PingResp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int
    properties: dict[int, object] = field(default_factory=dict)


Packet = Publish | ConnAck | PubAck | SubAck | UnsubAck | PingResp | Disconnect


# -- encoding ----------------------------------------------------------------------------------

def encode_varint(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError(f"variable byte integer {n} outside 0..{MAX_REMAINING}")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode("utf-8")
    return _binary(data)


def _binary(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError("MQTT strings and binary fields are limited to 65535 bytes")
    return struct.pack("!H", len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + encode_varint(len(body)) + body


@dataclass(frozen=True, slots=True)
class WillMessage:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def encode_connect(*, client_id: str, version: int, keepalive: int, clean_start: bool,
                   username: str | None = None, password: bytes | None = None,
                   will: WillMessage | None = None, session_expiry: int = 0,
                   receive_maximum: int = 65535, maximum_packet_size: int = 0) -> bytes:
    """CONNECT; MQTT 5 properties: session expiry, receive maximum, maximum packet size."""
    flags = 0x02 if clean_start else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if password is not None:
        flags |= 0x40
    if username is not None or password is not None:
        flags |= 0x80        # MQTT 3.1.1 allows a password only with a user name
    body = _utf8("MQTT") + bytes((version, flags)) + struct.pack("!H", keepalive)
    if version == MQTT5:
        props = struct.pack("!BI", P_SESSION_EXPIRY, session_expiry)
        props += struct.pack("!BH", P_RECEIVE_MAXIMUM, receive_maximum)
        if maximum_packet_size:
            props += struct.pack("!BI", P_MAXIMUM_PACKET_SIZE, maximum_packet_size)
        body += encode_varint(len(props)) + props
    body += _utf8(client_id)
    if will is not None:
        if version == MQTT5:
            body += b"\x00"                      # no will properties
        body += _utf8(will.topic) + _binary(will.payload)
    if username is not None or password is not None:
        body += _utf8(username or "")
    if password is not None:
        body += _binary(password)
    return _packet(CONNECT << 4, body)


def encode_subscribe(packet_id: int, filters: list[str], *, version: int, qos: int = 1) -> bytes:
    body = struct.pack("!H", packet_id)
    if version == MQTT5:
        body += b"\x00"
    for topic in filters:
        body += _utf8(topic) + bytes((qos,))
    return _packet((SUBSCRIBE << 4) | 0x02, body)


def encode_unsubscribe(packet_id: int, filters: list[str], *, version: int) -> bytes:
    body = struct.pack("!H", packet_id) + (b"\x00" if version == MQTT5 else b"")
    return _packet((UNSUBSCRIBE << 4) | 0x02, body + b"".join(_utf8(t) for t in filters))


def encode_publish(topic: str, payload: bytes, *, qos: int, retain: bool, packet_id: int,
                   version: int, dup: bool = False) -> bytes:
    if qos not in (0, 1):
        raise ValueError("the ingest session publishes with QoS 0 or 1 only")
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = _utf8(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if version == MQTT5:
        body += b"\x00"
    return _packet(first, body + payload)


def with_dup(packet: bytes) -> bytes:
    """The same PUBLISH with the DUP flag set (a resend after a reconnect)."""
    return bytes((packet[0] | 0x08,)) + packet[1:]


def encode_pubacks(packet_ids: list[int]) -> bytes:
    """PUBACKs for many messages in one buffer: each is ``40 02 id`` (MQTT 5 lets a success
    omit reason code and properties), i.e. one big-endian 32-bit word."""
    return struct.pack(f"!{len(packet_ids)}I", *[0x40020000 | pid for pid in packet_ids])


def encode_disconnect(reason_code: int, *, version: int) -> bytes:
    if version == MQTT5 and reason_code:
        return bytes((DISCONNECT << 4, 2, reason_code, 0))
    return DISCONNECT_PACKET


# -- decoding ----------------------------------------------------------------------------------

def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A variable byte integer inside a packet that ends at ``end``: (value, next position)."""
    value = shift = 0
    for i in range(4):
        if pos >= end:
            raise MalformedPacket("a variable byte integer runs past the end of its packet")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if i == 3:
            break
    raise MalformedPacket("a variable byte integer is longer than 4 bytes")


def _u16(buf: bytes, pos: int, end: int, what: str) -> int:
    if pos + 2 > end:
        raise MalformedPacket(f"{what} runs past the end of its packet")
    return (buf[pos] << 8) | buf[pos + 1]


def _string(buf: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    raw, pos = _bytes(buf, pos, end, what)
    try:
        return raw.decode("utf-8"), pos
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"{what} is not UTF-8") from exc


def _bytes(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    n = _u16(buf, pos, end, what)
    pos += 2
    if pos + n > end:
        raise MalformedPacket(f"{what} ({n} bytes) runs past the end of its packet")
    return bytes(buf[pos:pos + n]), pos + n


def decode_properties(buf: bytes, pos: int, end: int) -> tuple[dict[int, object], int]:
    """MQTT 5 properties at ``pos``: {identifier: value} (user properties: a list of pairs)."""
    length, pos = _varint(buf, pos, end)
    stop = pos + length
    if stop > end:
        raise MalformedPacket(f"properties ({length} bytes) run past the end of their packet")
    props: dict[int, object] = {}
    while pos < stop:
        ident, pos = _varint(buf, pos, stop)
        kind = _PROPERTY_TYPES.get(ident)
        if kind is None:
            raise MalformedPacket(f"unknown property identifier {ident:#04x}")
        if kind == _PAIR:
            key, pos = _string(buf, pos, stop, "a user property's name")
            val, pos = _string(buf, pos, stop, "a user property's value")
            pairs = props.setdefault(ident, [])
            assert isinstance(pairs, list)
            pairs.append((key, val))
            continue
        if ident in props:
            raise MalformedPacket(f"property {ident:#04x} appears twice")
        props[ident], pos = _property_value(buf, kind, pos, stop, f"property {ident:#04x}")
    return props, stop


def _property_value(buf: bytes, kind: int, pos: int, stop: int, what: str) -> tuple[object, int]:
    if kind == _VARINT:
        return _varint(buf, pos, stop)
    if kind == _STR:
        return _string(buf, pos, stop, what)
    if kind == _BIN:
        return _bytes(buf, pos, stop, what)
    size = {_BYTE: 1, _TWO: 2, _FOUR: 4}[kind]
    if pos + size > stop:
        raise MalformedPacket(f"{what} runs past the end of the properties")
    return int.from_bytes(buf[pos:pos + size], "big"), pos + size


def _publish_properties(buf: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    """A PUBLISH's properties as raw bytes (None when there are none) and where they end."""
    if pos >= end:
        raise MalformedPacket("an MQTT 5 PUBLISH without its property length")
    if buf[pos] == 0:
        return None, pos + 1
    plen, ppos = _varint(buf, pos, end)
    if ppos + plen > end:
        raise MalformedPacket(f"PUBLISH properties ({plen} bytes) run past the end of the packet")
    return bytes(buf[ppos:ppos + plen]), ppos + plen


#: Fixed-header flags every non-PUBLISH packet a broker may send must carry (§2.1.3).
_FLAGS = {CONNACK: 0, PUBACK: 0, SUBACK: 0, UNSUBACK: 0, PINGRESP: 0, DISCONNECT: 0}


class Decoder:
    """Turns the broker's byte stream, in any chunking, into packets.

    ``feed`` returns every packet completed by the new bytes and keeps the incomplete rest
    (never more than one packet of at most ``max_packet`` bytes plus its header). After a
    :class:`CodecError` the stream is unusable; the caller drops the connection.
    """

    def __init__(self, *, version: int = MQTT5, max_packet: int = 1 << 20) -> None:
        self.version = version
        self.max_packet = max_packet
        self._buf = b""

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes, received_at_ms: int = 0, generation: int = 0) -> list[Packet]:
        """Every packet the new bytes complete; PUBLISH packets carry the two stamps."""
        buf = self._buf + data if self._buf else data
        out: list[Packet] = []
        pos, n = 0, len(buf)
        v5 = self.version == MQTT5
        while pos + 2 <= n:
            first = buf[pos]
            # The remaining length, inlined: one byte for every ingest-sized packet.
            length = buf[pos + 1]
            start = pos + 2
            if length & 0x80:
                length, start = self._long_length(buf, pos, n)
                if start < 0:
                    break                    # the header itself is incomplete
            if length > self.max_packet:
                raise PacketTooLarge(f"a packet of {length} bytes is over the limit of "
                                     f"{self.max_packet} bytes")
            end = start + length
            if end > n:
                break
            if first & 0xF6 == 0x32 and v5:
                # The hot path, inlined: MQTT 5 QoS 1 PUBLISH without properties.
                tlen = (buf[start] << 8) | buf[start + 1]
                at = start + 2 + tlen
                if tlen > 0 and at + 3 <= end and buf[at + 2] == 0 and (buf[at] or buf[at + 1]):
                    try:
                        topic = buf[start + 2:at].decode()
                    except UnicodeDecodeError:
                        topic = buf[start + 2:at].decode("utf-8", "replace")
                    out.append(Publish(topic, buf[at + 3:end], 1, (buf[at] << 8) | buf[at + 1],
                                       bool(first & 1), received_at_ms, generation,
                                       bool(first & 8)))
                    pos = end
                    continue
            if first >> 4 == PUBLISH:
                msg = self._publish(buf, first, start, end, v5)
                msg.received_at_ms, msg.generation = received_at_ms, generation
                out.append(msg)
            else:
                out.append(self._other(buf, first, start, end, v5))
            pos = end
        self._buf = buf[pos:] if pos < n else b""
        return out

    @staticmethod
    def _long_length(buf: bytes, pos: int, n: int) -> tuple[int, int]:
        """A remaining length of 2-4 bytes: (value, body start), or start -1 if incomplete."""
        length, shift, at = 0, 0, pos + 1
        while at < n:
            byte = buf[at]
            at += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return length, at
            shift += 7
            if shift > 21:
                raise MalformedPacket("the remaining length is longer than 4 bytes")
        return 0, -1

    @staticmethod
    def _publish(buf: bytes, first: int, pos: int, end: int, v5: bool) -> Publish:
        qos = (first >> 1) & 3
        if qos == 3:
            raise MalformedPacket("a PUBLISH with QoS 3")
        if qos == 2:
            raise ProtocolViolation("a QoS 2 PUBLISH on a subscription made with QoS 1")
        if pos + 2 > end:
            raise MalformedPacket("a PUBLISH too short for its topic length")
        tlen = (buf[pos] << 8) | buf[pos + 1]
        pos += 2 + tlen
        if pos > end:
            raise MalformedPacket(f"a PUBLISH topic ({tlen} bytes) runs past the end of the packet")
        raw_topic = buf[pos - tlen:pos]
        try:
            topic = raw_topic.decode("utf-8")
        except UnicodeDecodeError:
            # Handed on, not fatal: the validator dead-letters it as bad_topic.
            topic = raw_topic.decode("utf-8", "replace")
        pid = 0
        if qos:
            if pos + 2 > end:
                raise MalformedPacket("a QoS 1 PUBLISH without its packet identifier")
            pid = (buf[pos] << 8) | buf[pos + 1]
            if not pid:
                raise MalformedPacket("a QoS 1 PUBLISH with packet identifier 0")
            pos += 2
        props: bytes | None = None
        if v5:
            props, pos = _publish_properties(buf, pos, end)
        if not tlen:
            # A topic alias only, which we never allowed (Topic Alias Maximum 0).
            raise ProtocolViolation("a PUBLISH with an empty topic")
        return Publish(topic, buf[pos:end], qos, pid, bool(first & 1), dup=bool(first & 8),
                       properties=props)

    def _other(self, buf: bytes, first: int, pos: int, end: int, v5: bool) -> Packet:
        kind, flags = first >> 4, first & 0x0F
        if kind not in _FLAGS:
            name = {CONNECT: "CONNECT", PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP",
                    SUBSCRIBE: "SUBSCRIBE", UNSUBSCRIBE: "UNSUBSCRIBE", PINGREQ: "PINGREQ",
                    AUTH: "AUTH"}.get(kind, f"reserved packet type {kind}")
            raise ProtocolViolation(f"the broker sent {name}, which this client never expects")
        if flags != _FLAGS[kind]:
            raise MalformedPacket(f"packet type {kind} with fixed-header flags {flags:#x}")
        if kind == PUBACK:
            return self._puback(buf, pos, end, v5)
        if kind == CONNACK:
            return self._connack(buf, pos, end, v5)
        if kind == SUBACK:
            pid = _u16(buf, pos, end, "a SUBACK's packet identifier")
            at = pos + 2
            if v5:
                _, at = decode_properties(buf, at, end)
            if at >= end:
                raise MalformedPacket("a SUBACK without reason codes")
            return SubAck(pid, tuple(buf[at:end]))
        if kind == UNSUBACK:
            return UnsubAck(_u16(buf, pos, end, "an UNSUBACK's packet identifier"))
        if kind == PINGRESP:
            if end != pos:
                raise MalformedPacket("a PINGRESP with a body")
            return PingResp()
        # DISCONNECT: only MQTT 5 brokers send it.
        if not v5:
            raise ProtocolViolation("an MQTT 3.1.1 broker sent DISCONNECT")
        reason = buf[pos] if end > pos else 0
        props = decode_properties(buf, pos + 1, end)[0] if end > pos + 1 else {}
        return Disconnect(reason, props)

    @staticmethod
    def _puback(buf: bytes, pos: int, end: int, v5: bool) -> PubAck:
        pid = _u16(buf, pos, end, "a PUBACK's packet identifier")
        if not v5 and end - pos != 2:
            raise MalformedPacket("an MQTT 3.1.1 PUBACK longer than 2 bytes")
        reason = buf[pos + 2] if end > pos + 2 else 0
        if end > pos + 3:
            decode_properties(buf, pos + 3, end)
        return PubAck(pid, reason)

    @staticmethod
    def _connack(buf: bytes, pos: int, end: int, v5: bool) -> ConnAck:
        if end - pos < 2:
            raise MalformedPacket("a CONNACK shorter than 2 bytes")
        ack_flags, code = buf[pos], buf[pos + 1]
        if ack_flags & 0xFE:
            raise MalformedPacket(f"CONNACK acknowledge flags {ack_flags:#x}")
        if not v5 or end - pos == 2:
            # A 3.1.1 CONNACK (or a 3.1.1 broker refusing our MQTT 5 CONNECT).
            if end - pos != 2:
                raise MalformedPacket("an MQTT 3.1.1 CONNACK longer than 2 bytes")
            mapped = _V311_CONNACK.get(code) if not v5 or code < 0x80 else code
            if mapped is None:
                raise MalformedPacket(f"CONNACK return code {code}")
            return ConnAck(bool(ack_flags & 1), mapped)
        props, _ = decode_properties(buf, pos + 2, end)
        return ConnAck(bool(ack_flags & 1), code, props)
