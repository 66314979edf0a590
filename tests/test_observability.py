"""The gateway watches itself: /metrics, /healthz, /status and the `gateway` measurement."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.http.app import start_http
from gateway.tools.devservices import Influxd, Mosquitto, free_port
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.influx import influx_rows
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def test_metrics_health_status_and_gateway_measurement(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry) -> None:
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url)
    root, db = settings.mqtt.topic_root, settings.influx.database
    dev = next(d for d in sample_registry if d.kind == "water_pressure")
    topic = f"{root}/{dev.park}/{dev.building}/{dev.device}/telemetry"
    now = time.time()
    messages = [
        # seq 1, 2, then 5: two messages missing; then 5 again: a repeat.
        {"ts": now - 3, "seq": 1, "values": {"pressure_mpa": 0.31}},
        {"ts": now - 2, "seq": 2, "values": {"pressure_mpa": 0.32}},
        {"ts": now - 1, "seq": 5, "values": {"pressure_mpa": 0.33}},
        {"ts": now - 1, "seq": 5, "values": {"pressure_mpa": 0.33}},
        # A device clock in 1970: stored at receive time, counted, device listed.
        {"ts": 1000, "seq": 6, "values": {"pressure_mpa": 0.34}},
    ]
    port = free_port()
    async with running_gateway(settings, sample_registry) as gw:
        runner = await start_http(gw, "127.0.0.1", port)
        try:
            base = f"http://127.0.0.1:{port}"
            status, body = await _get(f"{base}/healthz")
            health = json.loads(body)
            assert status == 200, body
            assert health["broker_connected"]
            assert health["influx_reachable"]

            async with MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("p")) as pub:
                for doc in messages:
                    await pub.publish(topic, json.dumps(doc).encode())
                await pub.publish(f"{root}/{dev.park}/{dev.building}/{dev.device}/event",
                                  b'{"type": "nope"}')
                await pub.flush(10)
            # Telemetry and events travel on separate sessions (the priority lane), and the
            # telemetry one may linger for a batch: wait for both, not for whichever came last.
            def received(kind: str) -> float:
                return gw.metrics.value("parkwatch_messages_received_total", type=kind)

            await wait_for(lambda: received("event") == 1 and received("telemetry") == 5,
                           timeout_s=10, what="all messages processed")

            status, text = await _get(f"{base}/metrics")
            assert status == 200
            assert 'parkwatch_messages_received_total{type="telemetry"} 5.0' in text
            assert 'parkwatch_messages_rejected_total{reason="schema"} 1.0' in text
            assert "parkwatch_seq_gaps_total 2.0" in text
            assert "parkwatch_seq_repeats_total 1.0" in text
            assert "parkwatch_untrusted_timestamps_total 1.0" in text

            status, body = await _get(f"{base}/status")
            snapshot: dict[str, Any] = json.loads(body)
            assert snapshot["untrusted_clock_devices"] == [dev.device]
            assert snapshot["rejected"]["schema"] == 1
            assert snapshot["latest"][0]["device"] == dev.device

            # The gateway measurement arrives through the same WAL and writer as readings.
            def gateway_points() -> list[list[Any]]:
                return influx_rows(influxd, db, 'SELECT "messages_received_total_telemetry", '
                                   '"seq_gaps_total" FROM "gateway" WHERE "instance" = '
                                   f"'{settings.instance}'")
            await wait_for(lambda: any(r[1] == 5 and r[2] == 2 for r in gateway_points()),
                           timeout_s=15, what="gateway measurement with the counters")

            # InfluxDB going away turns /healthz to 503 once the writer notices. The gauge is
            # set as the writer would; a write already in flight may set it back to 1 before
            # the request (under load it did), so the check gets a few tries.
            for _ in range(5):
                gw.metrics.influx_reachable.set(0)
                status, body = await _get(f"{base}/healthz")
                if status == 503:
                    break
            assert status == 503, body
            assert json.loads(body)["status"] == "degraded"
        finally:
            await runner.cleanup()
