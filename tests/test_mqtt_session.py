"""The ingest MQTT session (gateway/ingest/mqtt.py) against real brokers: mosquitto (MQTT 5)
and RabbitMQ's MQTT plugin (a second implementation; 3.10 speaks MQTT 3.1.1 only), plus a fake
broker for what a real one never does (malformed packets, silence).

amqtt 0.12.1 (a Python broker) was tried as the second broker and rejected: it forgets a QoS 1
message that got no PUBACK within 5 s or whose connection dropped (amqtt/mqtt/protocol/
handler.py, ``_handle_qos1_message_flow``), so it cannot hold messages for ack-after-durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.config import MqttSettings
from gateway.ingest.mqtt import Inbound, MqttSession, Will
from gateway.metrics import Metrics
from gateway.tools.devservices import Mosquitto, free_port
from gateway.tools.simulator.publisher import MqttPublisher
from tests.support.ids import unique
from tests.support.mqtt import Collector
from tests.support.rabbitmq import RabbitMq
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMq]:
    broker = RabbitMq(tmp_path_factory.mktemp("rabbitmq"))
    broker.start()
    yield broker
    broker.stop()


def _settings(url: str, protocol: str = "5", **kw: object) -> MqttSettings:
    return MqttSettings.model_validate({"url": url, "protocol": protocol,
                                        "reconnect_min_s": 0.1, **kw})


@contextlib.asynccontextmanager
async def _session(settings: MqttSettings, topics: list[str], *, client_id: str | None = None,
                   queue_size: int = 20_000, will: Will | None = None
                   ) -> AsyncIterator[MqttSession]:
    session = MqttSession(settings=settings, client_id=client_id or unique("gw"),
                          subscriptions=topics, metrics=Metrics(), queue_size=queue_size,
                          will=will)
    async with session:
        await session.wait_connected(20)
        yield session


async def _publish(port: int, topic: str, n: int, qos: int = 1) -> None:
    async with MqttPublisher("127.0.0.1", port, client_id=unique("dev")) as pub:
        for i in range(n):
            await pub.publish(topic, f"m{i}".encode(), qos=qos)
        await pub.flush(20)


async def _take(session: MqttSession, n: int, timeout_s: float = 20) -> list[Inbound]:
    got: list[Inbound] = []

    async def collect() -> None:
        async for batch in session.batches(1000):
            got.extend(batch)
            if len(got) >= n:
                return
    await asyncio.wait_for(collect(), timeout_s)
    return got


async def _resume_redelivers_unacked(url: str, port: int, protocol: str) -> None:
    """Unacknowledged messages come again after a reconnect; acknowledged ones do not."""
    topic = f"{unique('resume')}/t"
    settings = _settings(url, protocol)
    client_id = unique("gw")
    async with _session(settings, [topic], client_id=client_id) as session:
        await asyncio.sleep(0.3)      # the SUBACK
        await _publish(port, topic, 10)
        first = await _take(session, 10)
        assert [m.payload for m in first] == [f"m{i}".encode() for i in range(10)]
        session.puback_all(first[:4])                   # 4 durable, 6 not
        assert session.unacked == 6
        await session.reconnect()
        await session.wait_connected(20)
        again = await _take(session, 6)
        assert sorted(m.payload for m in again) == [f"m{i}".encode() for i in range(4, 10)]
        assert all(m.generation == session._generation for m in again)
        session.puback_all(first[4:])                   # stale: the old connection is gone
        session.puback_all(again)
        assert session.unacked == 0
        await session.reconnect()
        await session.wait_connected(20)
        await asyncio.sleep(1.0)
        assert not session._inbox, "acknowledged messages must not come back"
    # A new process with the same client id resumes the session too (clean start off).
    async with _session(settings, [topic], client_id=client_id) as session:
        await _publish(port, topic, 1)
        [msg] = await _take(session, 1)
        assert msg.payload == b"m0"


async def test_mosquitto_session_resume_redelivers_unacked(mosquitto: Mosquitto) -> None:
    await _resume_redelivers_unacked(mosquitto.url, mosquitto.port, "5")


async def test_rabbitmq_session_resume_redelivers_unacked_over_mqtt_311(
        rabbitmq: RabbitMq) -> None:
    await _resume_redelivers_unacked(rabbitmq.url, rabbitmq.port, "3.1.1")


async def test_mqtt5_to_a_311_broker_is_refused_with_a_hint(
        rabbitmq: RabbitMq, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ingest.mqtt")
    session = MqttSession(settings=_settings(rabbitmq.url, "5"), client_id=unique("gw"),
                          subscriptions=[], metrics=Metrics())
    async with session:
        await wait_for(lambda: "mqtt.protocol" in caplog.text or "before the broker answered"
                       in caplog.text, timeout_s=20, what="the refusal logged")
        assert not session.connected


async def test_receive_maximum_is_respected(mosquitto: Mosquitto) -> None:
    topic = f"{unique('rm')}/t"
    async with _session(_settings(mosquitto.url, receive_maximum=10), [topic]) as session:
        await asyncio.sleep(0.3)
        await _publish(mosquitto.port, topic, 50)
        first = await _take(session, 10)
        await asyncio.sleep(1.0)
        assert len(first) + len(session._inbox) == 10, "the broker exceeded Receive Maximum"
        assert session.unacked == 10
        session.puback_all(first)
        rest = await _take(session, 10)
        assert [m.payload for m in rest][:10] == [f"m{i}".encode() for i in range(10, 20)]


async def test_reading_pauses_when_the_inbox_is_full(mosquitto: Mosquitto) -> None:
    topic = f"{unique('pause')}/t"
    async with _session(_settings(mosquitto.url), [topic], queue_size=50) as session:
        await asyncio.sleep(0.3)
        await _publish(mosquitto.port, topic, 2000, qos=0)
        await wait_for(lambda: session._reading_paused, timeout_s=20, what="reading paused")
        await asyncio.sleep(0.5)
        # At most one read's worth above the limit (64 KiB of ~10-byte messages at worst).
        assert 50 <= len(session._inbox) < 50 + 65536 // 8
        held = len(session._inbox)
        await asyncio.sleep(0.5)
        assert len(session._inbox) == held, "reading went on while paused"
        got = await _take(session, 2000)
        assert len(got) == 2000
        assert not session._reading_paused


async def test_a_small_batch_lingers_for_more_and_a_big_one_does_not(
        mosquitto: Mosquitto) -> None:
    """ingest.linger_ms: a batch smaller than max_items // 8 waits for what follows it; one
    at that size is handed on at once, whatever the linger."""
    topic = f"{unique('linger')}/t"
    async with _session(_settings(mosquitto.url), [topic]) as session:
        await asyncio.sleep(0.3)      # the SUBACK
        batches = session.batches(1000, linger_s=3.0)
        await _publish(mosquitto.port, topic, 1)
        first = asyncio.ensure_future(anext(batches))
        await wait_for(lambda: bool(session._inbox), timeout_s=20, what="the first message")
        await _publish(mosquitto.port, topic, 9)   # well inside the 3 s linger
        batch = await asyncio.wait_for(first, 20)
        assert len(batch) == 10
        session.puback_all(batch)
        eager = session.batches(16, linger_s=3600.0)
        await _publish(mosquitto.port, topic, 2)   # 16 // 8: not small
        await wait_for(lambda: len(session._inbox) == 2, timeout_s=20, what="two messages")
        assert len(await asyncio.wait_for(anext(eager), 20)) == 2


async def test_the_will_is_published_when_the_connection_dies(mosquitto: Mosquitto) -> None:
    status = f"{unique('will')}/status"
    seen = Collector(mosquitto.port, status)
    try:
        async with _session(_settings(mosquitto.url), [], will=Will(status, b"offline")
                            ) as session:
            conn = session._conn
            assert conn is not None
            conn.close(abort=True)              # not a clean DISCONNECT: the Will goes out
            await wait_for(lambda: (status, b"offline") in seen.snapshot(), timeout_s=20,
                           what="the Will published")
            await session.wait_connected(20)    # and the session comes back
    finally:
        seen.close()


async def test_publish_waits_for_puback_and_survives_a_reconnect(mosquitto: Mosquitto) -> None:
    topic = f"{unique('out')}/doc"
    seen = Collector(mosquitto.port, topic)
    try:
        async with _session(_settings(mosquitto.url), []) as session:
            await asyncio.wait_for(session.publish(topic, b"one", retain=True), 10)
            await session.reconnect()
            pending = session.publish(topic, b"two")     # queued while disconnected
            await asyncio.wait_for(pending, 20)
            await wait_for(lambda: [p for _, p in seen.snapshot()] == [b"one", b"two"],
                           timeout_s=10, what="both publishes delivered")
    finally:
        seen.close()


# -- a fake broker: what a real one never does --------------------------------------------------

class FakeBroker:
    """Accepts connections, answers CONNECT with a CONNACK, then sends ``after`` (bytes)."""

    def __init__(self, after: bytes) -> None:
        self.after = after
        self.connections = 0
        self.port = free_port()
        self.server: asyncio.Server | None = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readexactly(2)
            writer.write(b"\x20\x03\x00\x00\x00" + self.after)
            await writer.drain()
            await reader.read()     # until the client drops us
        writer.close()

    async def __aenter__(self) -> FakeBroker:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.mark.parametrize(("after", "words"), [
    (b"\x36\x05\x00\x01a\x00\x01", "a PUBLISH with QoS 3"),
    (b"\x30\xff\xff\xff\xff\x01", "the remaining length is longer than 4 bytes"),
    (b"\xf0\x00", "the broker sent AUTH, which this client never expects"),
])
async def test_a_malformed_packet_is_named_and_the_session_reconnects(
        after: bytes, words: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ingest.mqtt")
    async with FakeBroker(after) as broker:
        session = MqttSession(settings=_settings(f"mqtt://127.0.0.1:{broker.port}"),
                              client_id=unique("gw"), subscriptions=[], metrics=Metrics())
        async with session:
            await wait_for(lambda: broker.connections >= 2, timeout_s=20, what="a reconnect")
    assert f"sent a bad packet: {words}; reconnecting" in caplog.text
    assert "closed before the broker answered" not in caplog.text


async def test_a_silent_broker_is_dropped_after_the_keepalive(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.ingest.mqtt")
    async with FakeBroker(b"") as broker:     # CONNACK, then never a PINGRESP
        session = MqttSession(settings=_settings(f"mqtt://127.0.0.1:{broker.port}",
                                                 keepalive_s=5),
                              client_id=unique("gw"), subscriptions=[], metrics=Metrics())
        async with session:
            await wait_for(lambda: broker.connections >= 2, timeout_s=30, what="a reconnect")
    assert "nothing from the broker" in caplog.text


def test_tls_files_are_checked_before_connecting(tmp_path: Path) -> None:
    settings = MqttSettings.model_validate({"url": "mqtts://127.0.0.1:1", "tls": {
        "ca_file": str(tmp_path / "missing.pem")}})
    with pytest.raises(Exception, match="cannot load MQTT TLS files"):
        asyncio.run(_construct(settings))


async def _construct(settings: MqttSettings) -> None:
    MqttSession(settings=settings, client_id="x", subscriptions=[], metrics=Metrics())
