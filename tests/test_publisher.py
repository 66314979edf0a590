"""The raw-socket MQTT publisher: packet encoding, and delivery through a real mosquitto."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.tools.devservices import Mosquitto, free_port
from gateway.tools.simulator.publisher import (
    MqttPublisher,
    MqttPublishError,
    encode_publish,
    encode_varint,
)
from tests.support.ids import unique
from tests.support.waiting import wait_for


@pytest.mark.parametrize(("n", "encoded"), [
    (0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"), (2_097_151, b"\xff\xff\x7f"), (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
])
def test_remaining_length_varint_matches_the_spec_table(n: int, encoded: bytes) -> None:
    assert encode_varint(n) == encoded  # MQTT 3.1.1 §2.2.3, table 2.4


def test_remaining_length_beyond_four_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="variable byte integer"):
        encode_varint(268_435_456)


def test_publish_packet_layout() -> None:
    packet = encode_publish("a/é", b"xy", qos=1, retain=True, packet_id=0x0102, dup=True)
    # fixed header: PUBLISH | DUP | QoS 1 | RETAIN; topic as 2-byte length + UTF-8 (é is 2 bytes)
    assert packet == b"\x3b\x0a" + b"\x00\x04a/\xc3\xa9" + b"\x01\x02" + b"xy"
    assert encode_publish("t", b"", qos=0, retain=False) == b"\x30\x03\x00\x01t"


# --------------------------------------------------------------------------- with a broker


class Subscriber:
    """A paho subscriber on its own thread (fine in tests) recording payloads in arrival order."""

    def __init__(self, port: int, topic: str, *, persistent: bool) -> None:
        self.payloads: list[bytes] = []
        self.subscribed = threading.Event()
        self._topic = topic
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("sub"),
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(1, 2)  # paho takes whole seconds
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.payloads.append(bytes(msg.payload))
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_connect(self, client: paho.Client, *_: object) -> None:
        client.subscribe(self._topic, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker of this test's own: the restart test must not disturb other tests."""
    instance = Mosquitto(tmp_path / "mosquitto")
    instance.start()
    yield instance
    instance.stop()


async def _subscribed(port: int, topic: str, *, persistent: bool = False) -> Subscriber:
    sub = Subscriber(port, topic, persistent=persistent)
    await wait_for(sub.subscribed.is_set, timeout_s=10, what="subscription acknowledged")
    return sub


@pytest.mark.integration
async def test_ten_thousand_qos1_messages_arrive_in_order(broker: Mosquitto) -> None:
    topic = unique("pub/") + "/t"
    sub = await _subscribed(broker.port, topic)
    expected = [f"m{i:05d}".encode() for i in range(10_000)]
    try:
        async with MqttPublisher("127.0.0.1", broker.port, client_id=unique("pub")) as pub:
            for payload in expected:
                await pub.publish(topic, payload, qos=1)
            await pub.flush(30)
            assert (pub.sent, pub.acked, pub.resent) == (10_000, 10_000, 0)
        await wait_for(lambda: len(sub.payloads) >= len(expected), timeout_s=30,
                       what="all messages at the subscriber")
        assert sub.payloads == expected
    finally:
        sub.close()


@pytest.mark.integration
async def test_qos0_and_retained_messages_arrive(broker: Mosquitto) -> None:
    topic = unique("pub/") + "/status"
    async with MqttPublisher("127.0.0.1", broker.port, client_id=unique("pub")) as pub:
        await pub.publish(topic, b"online", qos=1, retain=True)
        for i in range(100):
            await pub.publish(topic + "/q0", str(i).encode(), qos=0)
        await pub.flush(10)
    # A subscriber arriving later still gets the retained status.
    sub = await _subscribed(broker.port, topic)
    try:
        await wait_for(lambda: sub.payloads == [b"online"], timeout_s=10, what="retained status")
    finally:
        sub.close()


@pytest.mark.integration
async def test_nothing_is_lost_across_a_broker_restart(broker: Mosquitto) -> None:
    topic = unique("pub/") + "/t"
    # A persistent session: the broker queues for the subscriber while it is reconnecting.
    sub = await _subscribed(broker.port, topic, persistent=True)
    total = 10_000
    try:
        async with MqttPublisher("127.0.0.1", broker.port, client_id=unique("pub"),
                                 reconnect_min_s=0.05, reconnect_max_s=0.5) as pub:
            for i in range(total):
                if i == total // 3:
                    await asyncio.to_thread(broker.stop)  # graceful: mosquitto saves its state
                    restart = asyncio.create_task(asyncio.to_thread(broker.start))
                await pub.publish(topic, f"m{i:05d}".encode(), qos=1)
            await restart
            await pub.flush(30)
            assert pub.acked == total
            assert pub.reconnects >= 1
            assert pub.resent >= 1  # the window in flight at the stop went out again, DUP set
        await wait_for(lambda: len(set(sub.payloads)) >= total, timeout_s=30,
                       what="every distinct message at the subscriber")
        assert set(sub.payloads) == {f"m{i:05d}".encode() for i in range(total)}
    finally:
        sub.close()


@pytest.mark.integration
async def test_a_full_window_blocks_publish_until_the_broker_returns(broker: Mosquitto) -> None:
    topic = unique("pub/") + "/t"
    async with MqttPublisher("127.0.0.1", broker.port, client_id=unique("pub"),
                             max_inflight=10, reconnect_min_s=0.05,
                             reconnect_max_s=0.2) as pub:
        await asyncio.to_thread(broker.stop)
        for i in range(10):
            await pub.publish(topic, str(i).encode())  # fills the window: returns at once
        blocked = asyncio.create_task(pub.publish(topic, b"10"))
        done, _ = await asyncio.wait({blocked}, timeout=0.3)
        assert not done, "the 11th message must wait for a free slot"
        await asyncio.to_thread(broker.start)
        await asyncio.wait_for(blocked, timeout=10)
        await pub.flush(10)
        assert pub.acked == 11


async def test_connect_to_a_closed_port_raises() -> None:
    with pytest.raises(MqttPublishError, match="cannot connect"):
        async with MqttPublisher("127.0.0.1", free_port(), client_id="nobody",
                                 connect_timeout_s=2):
            pass
