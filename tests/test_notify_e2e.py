"""The catch-all webhook of contract §7, end to end: alarm → outbox → signed POST, once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.devservices import Influxd, Mosquitto
from gateway.notify.webhook import verify
from gateway.registry import Registry
from gateway.simulator.publisher import MqttPublisher
from tests.conftest import influx_rows, make_settings, running_gateway, unique, wait_for
from tests.notify_servers import ProviderServer, Step

pytestmark = pytest.mark.integration
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


async def test_catch_all_webhook_gets_each_state_change_once_even_through_an_outage(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        sample_registry: Registry) -> None:
    async with ProviderServer(webhook_secret=SECRET) as hook:
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                                 notify={"webhook_url": f"{hook.url}/parkwatch",
                                         "webhook_secret": SECRET})
        root = settings.mqtt.topic_root
        panel = next(d for d in sample_registry if d.kind == "fire_panel")
        topic = f"{root}/{panel.park}/{panel.building}/{panel.device}/event"
        # The receiver is down for the first three attempts.
        hook.script(Step(500), Step(503), Step(500))
        async with running_gateway(settings, sample_registry) as gw, \
                MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("n")) as pub:
            for _ in range(3):  # the same fire alarm three times: still one alarm, one POST
                await pub.publish(topic, json.dumps(
                    {"ts": time.time(), "type": "fire_alarm", "point": "2-01-009"}).encode())
            await pub.flush(10)
            # Three scripted failures, then the receiver answers normally.
            await wait_for(lambda: len(hook.of("webhook")) >= 4,
                           timeout_s=30, what="webhook delivered after the outage")
            await pub.publish(topic, json.dumps({"ts": time.time(), "type": "reset"}).encode())
            await pub.flush(10)
            await wait_for(lambda: len(hook.of("webhook")) >= 5,
                           timeout_s=30, what="resolved delivered")
            assert gw.notifier is not None
            counts = await gw.notifier.outbox.counts()
        requests = hook.of("webhook")
        assert len(requests) == 5, [r.json()["state"] for r in requests]
        assert all(r.problem is None for r in requests)
        delivered = requests[3:]
        docs = [r.json() for r in delivered]
        assert [d["state"] for d in docs] == ["firing", "resolved"]
        assert docs[0]["rule"] == "fire_alarm"
        assert docs[0]["device"] == panel.device
        assert docs[0]["severity"] == "critical"
        assert counts == {"sent": 2}
        # Retries carried the same webhook-id, so a receiver could dedupe them too.
        firing_ids = {r.headers["webhook-id"] for r in requests if r.json()["state"] == "firing"}
        assert len(firing_ids) == 1
        assert all(verify(SECRET, r.headers, r.body, time.time()) for r in delivered)
    rows = influx_rows(influxd, settings.influx.database,
                       'SELECT "outcome", "attempt" FROM "notifications"')
    assert [r[1] for r in rows].count("sent") == 2
    assert [r[1] for r in rows].count("retry") == 3
