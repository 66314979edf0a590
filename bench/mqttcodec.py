"""The ingest codec's hot path against the ``mqtt5`` package (a Rust sans-IO codec), issue 15.

    .venv/bin/python -m bench.mqttcodec [--messages 200000]

Decodes a stream of canonical-sized QoS 1 MQTT 5 PUBLISH packets (fed in 64 KiB chunks, as the
transport hands them over) and encodes their PUBACKs, both ways, and prints µs per message.
``mqtt5.read`` takes one packet per call and builds its full packet object (properties
included); gateway/ingest/mqttcodec.py decodes a whole chunk per call.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import mqtt5

from gateway.ingest.mqttcodec import MQTT5, Decoder, Publish, encode_pubacks, encode_publish

PAYLOAD = b'{"ts":1764770000,"seq":123456,"values":{"pressure_mpa":0.350},"battery":87,"rssi":-71}'
CHUNK = 65536


def stream(n: int) -> bytes:
    return b"".join(
        encode_publish(f"pw1/park-a/b{i % 7}/wp-{i % 500:05d}/telemetry", PAYLOAD, qos=1,
                       retain=False, packet_id=i % 65535 + 1, version=MQTT5)
        for i in range(n))


def ours(data: bytes) -> list[int]:
    dec = Decoder(version=MQTT5)
    pids: list[int] = []
    for at in range(0, len(data), CHUNK):
        for p in dec.feed(data[at:at + CHUNK]):
            assert isinstance(p, Publish)
            pids.append(p.mid)
    return pids


def theirs(data: bytes) -> list[int]:
    pids: list[int] = []
    rest = b""
    for at in range(0, len(data), CHUNK):
        buf = rest + data[at:at + CHUNK]
        view, pos = memoryview(buf), 0
        while True:
            try:
                packet, used = mqtt5.read(view[pos:])
            except Exception:  # noqa: BLE001 - mqtt5 signals "incomplete" with an exception
                break
            pos += used
            assert isinstance(packet, mqtt5.PublishPacket)
            assert packet.packet_id is not None
            pids.append(packet.packet_id)
        rest = buf[pos:]
    return pids


def acks_ours(pids: list[int]) -> int:
    return sum(len(encode_pubacks(pids[i:i + 2000])) for i in range(0, len(pids), 2000))


def acks_theirs(pids: list[int]) -> int:
    return sum(len(b"".join(mqtt5.PubAckPacket(packet_id=p).write() for p in pids[i:i + 2000]))
               for i in range(0, len(pids), 2000))


def best(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) / n * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    args = parser.parse_args(argv)
    data = stream(args.messages)
    pids = ours(data)
    assert pids == theirs(data), "the two codecs disagree"
    print(f"{args.messages} PUBLISH packets ({len(data) / args.messages:.0f} bytes each), "
          f"best of 5, µs per message")
    print(f"  decode  mqttcodec {best(lambda: ours(data), args.messages):.3f}   "
          f"mqtt5 {best(lambda: theirs(data), args.messages):.3f}")
    print(f"  PUBACK  mqttcodec {best(lambda: acks_ours(pids), args.messages):.3f}   "
          f"mqtt5 {best(lambda: acks_theirs(pids), args.messages):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
