"""A storm through the real broker: 200 alarms in one building at once, plus one fire.

Done-means of the notifications issue: grouped messages within the robot's rate limit, and the
fire alarm not delayed behind them. Real mosquitto and influxd; the DingTalk robot is the local
provider fake (it checks the signature like the real API).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.registry import load_registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.influx import influx_rows
from tests.support.notify import DT_SECRET
from tests.support.notify_servers import DINGTALK_URL, ProviderServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
STORM = 200


def _registry(tmp_path: Path) -> Path:
    """One building with 200 smoke detectors (the storm) and one more (the fire)."""
    devices = [{"device": f"sm-{i:04d}", "park": "xz01", "building": "b9", "floor": str(1 + i % 5),
                "zone": f"z{i % 8}", "kind": "smoke", "tenant": "hs-elec",
                "location": f"{1 + i % 5}F bay {i}", "report_interval_s": 600}
               for i in range(STORM + 1)]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({"devices": devices}), encoding="utf-8")
    return path


def _routing(base_url: str) -> dict[str, Any]:
    return {"notify": {
        "channels": {"robot": {"type": "dingtalk", "settings": {"base_url": base_url},
                               "secret_env": {"url": "T_DT_URL", "signing": "T_DT_SECRET"},
                               "rate_limit_per_min": 20}},
        "contacts": {"ops": {"name": "ops group", "channels": ["robot"]}},
        "duty_officer": "ops",
        "route": {"receivers": ["ops"], "group_by": ["park", "building", "rule"],
                  "group_wait_s": 2, "group_interval_s": 60},
    }}


async def test_two_hundred_alarms_in_one_building_become_a_few_messages_and_fire_goes_first(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = load_registry(_registry(tmp_path))
    async with ProviderServer(dingtalk_secret=DT_SECRET) as srv:
        monkeypatch.setenv("T_DT_URL", DINGTALK_URL)
        monkeypatch.setenv("T_DT_SECRET", DT_SECRET)
        routing = tmp_path / "notify.yaml"
        routing.write_text(yaml.safe_dump(_routing(srv.url)), encoding="utf-8")
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                                 registry=str(tmp_path / "registry.yaml"),
                                 notify={"config": str(routing)})
        root = settings.mqtt.topic_root
        async with running_gateway(settings, registry), \
                MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("s")) as pub:
            # Two hundred detectors report a fault at once (a loop card failed, say) ...
            for i in range(STORM):
                await pub.publish(f"{root}/xz01/b9/sm-{i:04d}/event", json.dumps(
                    {"ts": time.time(), "type": "fault", "detail": "loop card"}).encode())
            # ... and, behind them on the wire, a real fire.
            await pub.publish(f"{root}/xz01/b9/sm-{STORM:04d}/event", json.dumps(
                {"ts": time.time(), "type": "fire_alarm"}).encode())
            await pub.flush(30)
            db = settings.state_dir / "alarms.sqlite3"

            def outbox() -> list[tuple[str, str, int | None]]:
                with sqlite3.connect(db) as conn:
                    return [(str(r[0]), str(r[1]), r[2]) for r in conn.execute(
                        "SELECT json_extract(notification, '$.alarm.rule'), state, sent_at_ms"
                        " FROM outbox")]

            await wait_for(lambda: sum(1 for r in outbox() if r[0] == "device_fault"
                                       and r[1] == "sent") == STORM,
                           timeout_s=60, what="every fault notification recorded as sent")
            def audited() -> list[list[Any]]:
                return influx_rows(influxd, settings.influx.database,
                                   "SELECT \"attempt\", \"outcome\" FROM \"notifications\""
                                   " WHERE \"outcome\" = 'sent'")

            await wait_for(lambda: len(audited()) >= STORM + 1, timeout_s=30,
                           what="every notification in the audit measurement")
            audit = audited()
        rows = outbox()
        messages = srv.of("dingtalk")
    assert all(m.problem is None for m in messages)
    # Within the robot's limit: a handful of messages, not two hundred and one.
    assert len(messages) <= 20
    faults = [r for r in rows if r[0] == "device_fault"]
    fires = [r for r in rows if r[0] == "fire_alarm"]
    assert len(faults) == STORM
    assert len(fires) == 1
    assert fires[0][1] == "sent"
    # The fire alarm was not held behind the storm: it left before any digest of faults.
    assert fires[0][2] is not None
    assert fires[0][2] < min(r[2] or 0 for r in faults)
    first = json.loads(messages[0].body)["markdown"]["title"]
    assert "火警" in first or "Fire" in first
    # The faults left as digests that say how many alarms they carry.
    titles = [json.loads(m.body)["markdown"]["title"] for m in messages]
    fault_titles = [t for t in titles if "设备故障" in t]
    carried = [int(m.group(1)) if (m := re.match(r"\[(\d+)\] ", t)) else 1
               for t in fault_titles]
    assert sum(carried) == STORM
    assert len(fault_titles) <= 3                      # a digest or two, not 200 messages
    # Every one of the 201 notifications is in the audit measurement.
    assert len(audit) >= STORM + 1
