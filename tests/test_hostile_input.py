"""Hostile input end to end (issue 6, item 4): every class of bad message, interleaved with good
traffic from other devices, through a real mosquitto and a real influxd.

It shows that each rejection is dead-lettered with its reason and counted, that every good
message is stored exactly once, that a flooding device is limited while everyone else (and every
fire alarm, its own included) gets through, and that nothing a device sent ever became an InfluxDB
measurement, tag or series key.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from gateway.ingest.deadletter import deadletter_document, deadletter_topic
from gateway.storage.lineprotocol import encode_line, escape_measurement, tag_set
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.base import Rejection, RejectReason
from sensors.errors import RegistryError
from sensors.registry import ID_PATTERN, Device, Registry, build_registry
from sensors.text import strip_controls
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.influx import influx_rows
from tests.support.waiting import wait_for

NOW_S = int(time.time())
BASE_TS = NOW_S - 86400  # a day ago: trusted, and far from the flood's timestamps
_METRIC = {"water_pressure": ("pressure_mpa", 0.30), "heat": ("temperature_c", 25.0),
           "gas": ("lel_pct", 1.0), "water_level": ("level_m", 4.0)}
#: A text with everything that means something in line protocol, a topic or a log line.
NASTY_TEXT = 'a,b=c d"e\\f\ng,park=x t=1 1\r\t#+/\u2028\u0000'
FLOOD = 1000
FIRE_DURING_FLOOD = 40
CALL_POINT_BURST = 300
_SAFE_ID = re.compile(ID_PATTERN)
_SAFE_SERIES_KEY = re.compile(r"^[a-z_]+(,[a-z_]+=[A-Za-z0-9_.-]+)*$")


class _DeadLetters:
    """A paho subscriber in its own thread, collecting what this gateway dead-letters."""

    def __init__(self, port: int) -> None:
        self._docs: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("dl"))
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe("parkwatch/deadletter/#", qos=1)
        self._client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self._docs.append((msg.topic, json.loads(msg.payload)))

    def mine(self, instance: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            return [(t, d) for t, d in self._docs if d.get("instance") == instance]

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


@pytest.fixture
def deadletters(mosquitto: Mosquitto) -> Iterator[_DeadLetters]:
    collector = _DeadLetters(mosquitto.port)
    yield collector
    collector.close()


def _by_kind(registry: Registry, kind: str) -> list[Device]:
    return sorted((d for d in registry if d.kind == kind), key=lambda d: d.device)


def _topic(root: str, dev: Device, channel: str) -> str:
    return f"{root}/{dev.park}/{dev.building}/{dev.device}/{channel}"


def _good(registry: Registry, root: str, flooder: Device) -> list[tuple[str, bytes]]:
    """Telemetry from every measuring device but the flooder, seq-numbered per device."""
    devs = [d for d in sorted(registry, key=lambda d: d.device)
            if d.kind in _METRIC and d.device != flooder.device]
    out: list[tuple[str, bytes]] = []
    for seq in range(12):
        for dev in devs:
            metric, base = _METRIC[dev.kind]
            payload = {"ts": BASE_TS + seq, "seq": seq, "values": {metric: base + seq / 1000}}
            out.append((_topic(root, dev, "telemetry"), json.dumps(payload).encode()))
    return out


def _hostile(registry: Registry, root: str) -> list[tuple[str, bytes, str]]:
    """(topic, payload, expected reason) for every class but the flood."""
    wp = _by_kind(registry, "water_pressure")[0]
    fp = _by_kind(registry, "fire_panel")[0]
    other_building = next(d.building for d in registry if d.building != wp.building)
    not_fp_building = next(d.building for d in registry if d.building != fp.building)
    tel = _topic(root, wp, "telemetry")
    ok = b'{"values": {"pressure_mpa": 0.3}}'
    at = f"{root}/{wp.park}/{wp.building}"
    return [
        # size and shape limits
        (tel, b'{"values": {"pressure_mpa": 0.3}, "pad": "' + b"x" * 100_000 + b'"}',
         "oversize"),
        (tel, b'{"values": ' + b"[" * 5000 + b"]" * 5000 + b"}", "oversize"),
        (tel, json.dumps({"readings": [{"values": {"pressure_mpa": 0.3}}] * 1001}).encode(),
         "oversize"),
        (tel, json.dumps({"values": {f"m{i}": 1 for i in range(100)}}).encode(), "oversize"),
        # encodings and numbers
        (tel, b'{"values": {"pressure_mpa": 0.3}, "x": "\xff\xfe"}', "bad_utf8"),
        (tel, b'{"values": {"pressure_mpa": NaN}}', "nan"),
        (tel, b'{"values": {"pressure_mpa": -Infinity}}', "nan"),
        (tel, b'{"values": {"pressure_mpa": 1e400}}', "nan"),
        (tel, b'{"values": {"pressure_mpa": 0.3}, "battery_pct": 1e999}', "nan"),
        (tel, b'{"values": {"pressure_mpa": true}}', "type"),
        # injection attempts in the topic (characters a broker lets through)...
        (f"{at}/wp,0017/telemetry", ok, "bad_id"),
        (f"{at}/wp 0017/telemetry", ok, "bad_id"),
        (f"{at}/wp=0017/telemetry", ok, "bad_id"),
        (f'{at}/wp"0017/telemetry', ok, "bad_id"),
        (f"{at}/wp\\0017/telemetry", ok, "bad_id"),
        (f"{at}/{'w' * 200}/telemetry", ok, "bad_id"),
        (f"{root}/xz01,evil=1/{wp.building}/{wp.device}/telemetry", ok, "bad_id"),
        (f"{root}/{wp.park}/b 3/{wp.device}/event", b'{"type": "fire_alarm"}', "bad_id"),
        # ...and in the payload
        (tel, b'{"values": {"pressure_mpa,evil=1 x": 0.3}}', "unknown_metric"),
        (tel, b'{"device": "evil,park=x", "values": {"pressure_mpa": 0.3}}', "schema"),
        # spoofing: a registered device under another building, a device that does not exist
        (f"{root}/{wp.park}/{other_building}/{wp.device}/telemetry", ok, "topic_mismatch"),
        (f"{root}/{fp.park}/{not_fp_building}/{fp.device}/event", b'{"type": "fire_alarm"}',
         "topic_mismatch"),
        (f"{at}/wp-9999/telemetry", ok, "unknown_device"),
    ]


def _flood(root: str, flooder: Device) -> list[tuple[str, bytes]]:
    # Distinct, recent timestamps: every accepted one is its own point in InfluxDB.
    start_ms = (NOW_S - 120) * 1000
    return [(_topic(root, flooder, "telemetry"),
             json.dumps({"ts": start_ms + i, "seq": i, "values": {}}).encode())
            for i in range(FLOOD)]


def _fire(root: str, dev: Device, n: int, tag: str) -> list[tuple[str, bytes]]:
    start_ms = (NOW_S - 60) * 1000
    return [(_topic(root, dev, "event"),
             json.dumps({"ts": start_ms + i, "type": "fire_alarm", "point": f"{tag}{i}"}).encode())
            for i in range(n)]


def _interleave(*streams: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Round-robin in proportion to length, so every stream runs through the whole test."""
    longest = max(len(s) for s in streams)
    out: list[tuple[str, bytes]] = []
    for step in range(longest):
        for stream in streams:
            lo = step * len(stream) // longest
            hi = (step + 1) * len(stream) // longest
            out.extend(stream[lo:hi])
    return out


def _series(influxd: Influxd, db: str, query: str) -> list[str]:
    return [str(row[0]) for row in influx_rows(influxd, db, query)]


def _count(influxd: Influxd, db: str, query: str) -> int:
    rows = influx_rows(influxd, db, query)
    return int(rows[0][1]) if rows else 0


@pytest.mark.integration
async def test_hostile_input_is_refused_and_counted_while_everyone_else_flows(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        deadletters: _DeadLetters) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    assert settings.ingest.device_rate_per_s == 20  # the shipped defaults are what is tested
    assert settings.ingest.device_burst == 200
    root, db = settings.mqtt.topic_root, settings.influx.database
    flooder = _by_kind(sample_registry, "smoke")[0]
    panel = _by_kind(sample_registry, "fire_panel")[0]
    call_point = _by_kind(sample_registry, "manual_call_point")[0]
    good = _good(sample_registry, root, flooder)
    hostile = _hostile(sample_registry, root)
    # Event text full of line-protocol syntax is legitimate content: stored, escaped, intact.
    nasty_event = (_topic(root, panel, "event"),
                   json.dumps({"ts": NOW_S - 30, "type": "fault", "point": "nasty",
                               "detail": NASTY_TEXT}).encode())
    traffic = _interleave(good, [(t, p) for t, p, _ in hostile], _flood(root, flooder),
                          _fire(root, flooder, FIRE_DURING_FLOOD, "flood"),
                          _fire(root, call_point, CALL_POINT_BURST, "burst"), [nasty_event])

    async with running_gateway(settings, sample_registry) as gw:
        async with MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("pub")) as pub:
            for topic, payload in traffic:
                await pub.publish(topic, payload, qos=1)
            await pub.flush(60)
        closed_by_broker = await asyncio.to_thread(_publish_raw_topic, mosquitto.port, root)

        def received() -> float:
            return sum(gw.metrics.value("parkwatch_messages_received_total", type=t)
                       for t in ("telemetry", "event", "status", "other"))

        await wait_for(lambda: received() == len(traffic), timeout_s=60,
                       what="every message received by the gateway")
        expected = collections.Counter(reason for *_, reason in hostile)
        for reason, n in expected.items():
            assert gw.metrics.value("parkwatch_messages_rejected_total", reason=reason) == n, reason
        limited = int(gw.metrics.value("parkwatch_messages_rejected_total",
                                       reason="rate_limited"))
        await wait_for(lambda: len(deadletters.mine(settings.instance)) == len(hostile) + limited,
                       timeout_s=30, what="every rejection dead-lettered")
        await wait_for(lambda: gw.metrics.value("parkwatch_unacked_in_flight") == 0,
                       timeout_s=30, what="every message acknowledged")
        accepted_flood = FLOOD - limited
        accepted_events = FIRE_DURING_FLOOD + CALL_POINT_BURST + 1

        def stored() -> bool:
            return (_count(influxd, db, 'SELECT count("seq") FROM "smoke"') == accepted_flood
                    and _count(influxd, db, 'SELECT count("point") FROM "events"')
                    == accepted_events
                    and sum(_count(influxd, db, f'SELECT count("{m}") FROM "{k}"')
                            for k, (m, _) in _METRIC.items()) == len(good))

        await wait_for(lambda: asyncio.to_thread(stored), timeout_s=90, interval=0.5,
                       what="every accepted message in InfluxDB")
        assert gw.metrics.value("parkwatch_messages_accepted_total", type="telemetry") == (
            len(good) + accepted_flood)
        assert gw.metrics.value("parkwatch_messages_accepted_total", type="event") == (
            accepted_events)

    print(f"hostile: {len(traffic)} sent, {len(hostile)} hostile, {limited} rate-limited, "
          f"{accepted_flood} of the flood accepted")
    # The flood was limited: about the burst got through, never all of it.
    assert settings.ingest.device_burst <= accepted_flood < FLOOD
    # Dead letters: the right reason in the topic and the document, the flooder's topic only.
    docs = deadletters.mine(settings.instance)
    reasons = collections.Counter(doc["reason"] for _, doc in docs)
    assert reasons == expected + collections.Counter({"rate_limited": limited})
    for topic, doc in docs:
        assert topic == f"parkwatch/deadletter/{doc['reason']}"
        if doc["reason"] == "rate_limited":
            assert doc["topic"] == _topic(root, flooder, "telemetry")
    # Every good message exactly once: per device, every seq, no more.
    for kind, (metric, _) in _METRIC.items():
        result: Any = influxd.query(f'SELECT count("{metric}") FROM "{kind}" GROUP BY "device"',
                                    db)
        counts = {s["tags"]["device"]: s["values"][0][1]
                  for s in result["results"][0].get("series", [])}
        assert set(counts.values()) == {12}, kind
    # Every fire alarm landed, the flooding detector's own included.
    for dev, n in ((flooder, FIRE_DURING_FLOOD), (call_point, CALL_POINT_BURST)):
        assert _count(influxd, db, f'SELECT count("point") FROM "events" WHERE '
                                   f"\"device\" = '{dev.device}' AND \"type\" = 'fire_alarm'") == n
    # The nasty text is stored with its line-protocol specials intact and its control
    # characters stripped at decode (tab, CR and newline become spaces; NUL goes).
    rows = influx_rows(influxd, db, "SELECT \"detail\" FROM \"events\" WHERE \"point\" = 'nasty'")
    assert [row[1] for row in rows] == [strip_controls(NASTY_TEXT)]
    assert rows[0][1] == 'a,b=c d"e\\f g,park=x t=1 1  #+/\u2028'
    # Nothing a device sent became a measurement, a tag value or a series key.
    measurements = set(_series(influxd, db, "SHOW MEASUREMENTS"))
    assert measurements <= {*_METRIC, "smoke", "events", "gateway", "alarms", "device_status"}
    for key in _series(influxd, db, "SHOW SERIES"):
        assert _SAFE_SERIES_KEY.fullmatch(key), key
    devices = {str(row[1]) for row in influx_rows(influxd, db,
                                                   'SHOW TAG VALUES WITH KEY = "device"')}
    assert devices <= {d.device for d in sample_registry}
    assert all(_SAFE_ID.fullmatch(d) for d in devices)
    # A topic that is not UTF-8 never reaches ParkWatch: the broker drops the publisher.
    assert closed_by_broker


def _publish_raw_topic(port: int, root: str) -> bool:
    """Publish (QoS 0) on a topic with invalid UTF-8, which no MQTT library will send; say
    whether the broker closed the connection for it."""
    client_id = unique("raw").encode()
    connect_body = (b"\x00\x04MQTT\x04\x02\x00\x3c" + struct.pack("!H", len(client_id))
                    + client_id)
    topic = f"{root}/xz01/b3/".encode() + b"wp-0017\xff\xfe/telemetry"
    publish_body = struct.pack("!H", len(topic)) + topic + b'{"values": {"pressure_mpa": 0.3}}'
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x10" + bytes([len(connect_body)]) + connect_body)
        if sock.recv(4)[:1] != b"\x20":  # CONNACK
            return False
        sock.sendall(b"\x30" + bytes([len(publish_body)]) + publish_body)
        try:
            return sock.recv(16) == b""
        except ConnectionResetError:
            return True


# --------------------------------------------------------------------------- no injection path
# Only two kinds of device-controlled text could reach a line or a topic: IDs (the topic, and the
# registry's tag values) and event text (string fields). IDs are refused unless they match the
# ID rule; event text is escaped. The tests below pin both down.

INJECTIONS = ["a,b", "a b", "a=b", 'a"b', "a\\b", "a\nb", "a\rb", "+", "#", "a/b", "", "w" * 65,
              "a\x00b", "-a", "a\u2028b", "a\u0430", "a;b", "a'b", "x\\"]
_ROW = {"device": "d1", "park": "p1", "building": "b1", "floor": "1", "zone": "z1",
        "kind": "smoke", "tenant": "t1"}


@pytest.mark.parametrize("field", ["device", "park", "building", "floor", "zone", "tenant"])
@pytest.mark.parametrize("bad", INJECTIONS)
def test_the_registry_refuses_injection_in_every_tag_value(field: str, bad: str) -> None:
    with pytest.raises(RegistryError):
        build_registry([(1, {**_ROW, field: bad})], source="test")


def test_free_text_location_is_never_a_tag() -> None:
    row = {**_ROW, "location": 'x,y=z "w"\n# evil'}
    device = next(iter(build_registry([(1, row)], source="test")))
    assert "location" not in device.tags()
    assert set(device.tags()) == {"device", "park", "building", "floor", "zone", "tenant"}


def _split_fields(section: str) -> dict[str, str]:
    """Parse ``k="v",k2="v2"`` string fields the way InfluxDB does: inside quotes a backslash
    escapes the next character when it is a quote or a backslash."""
    out: dict[str, str] = {}
    i = 0
    while i < len(section):
        eq = section.index("=", i)
        key = section[i:eq]
        assert section[eq + 1] == '"', section
        j = eq + 2
        value: list[str] = []
        while section[j] != '"':
            if section[j] == "\\" and section[j + 1] in '"\\':
                j += 1
            value.append(section[j])
            j += 1
        out[key] = "".join(value)
        i = j + 1
        if i < len(section):
            assert section[i] == ",", section
            i += 1
    return out


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text(), st.integers(min_value=0, max_value=2**62))
def test_event_text_never_escapes_its_string_field(point: str, detail: str, ts: int) -> None:
    tags = {"park": "p1", "device": "d1", "type": "fire_alarm"}
    line = encode_line(escape_measurement("events"), tag_set(tags), {"detail": detail,
                                                                     "point": point}, ts)
    assert "\n" not in line  # one point, one line: the WAL and InfluxDB both rely on it
    head, _, rest = line.partition(" ")
    fields, _, stamp = rest.rpartition(" ")
    assert head == "events,device=d1,park=p1,type=fire_alarm"
    assert stamp == str(ts)
    # What InfluxDB stores: the text as sent, except that a newline is kept as the two
    # characters backslash-n (gateway/storage/lineprotocol.py says why).
    assert _split_fields(fields) == {"detail": detail.replace("\n", "\\n"),
                                     "point": point.replace("\n", "\\n")}


@given(st.sampled_from(list(RejectReason)), st.text(max_size=2000), st.text(max_size=200),
       st.binary(max_size=200))
@settings(max_examples=200, deadline=None)
def test_dead_letters_go_only_to_fixed_topics(reason: RejectReason, detail: str, topic: str,
                                              payload: bytes) -> None:
    rejection = Rejection(reason, detail)
    assert deadletter_topic(rejection) == f"parkwatch/deadletter/{reason.value}"
    assert len(rejection.detail) <= 300
    doc = json.loads(deadletter_document(rejection=rejection, topic=topic, payload=payload,
                                         received_at_ms=1764059460000, instance="i"))
    assert doc["reason"] == reason.value
