"""The scorecard reads what the real pipeline stores: fire alarms published over MQTT to a
running gateway, acknowledged through its alarm service with known dispositions, then the
scorecard collected from that gateway's configuration (alarm store file and InfluxDB).

Times here are real, so only the figures that do not depend on them are exact: the false-alarm
rate, the counts, and (answered within seconds) the 3-minute share. tests/test_scorecard_history
and tests/test_scorecard_cli hold the timed figures exactly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.runtime.gateway import Gateway
from gateway.scorecard.collect import collect
from gateway.scorecard.model import Period
from gateway.scorecard.report import compute
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from rules.alarm import AlarmState, Disposition
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.scorecard import registry, registry_yaml
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

ANSWERS = {"fd-1": Disposition.FALSE_ALARM, "fd-2": Disposition.REAL,
           "mc-1": Disposition.FALSE_ALARM}


def _fires(gw: Gateway, *, firing_only: bool = True) -> dict[str, str]:
    """Active fire alarms by device (only the firing ones, unanswered, by default)."""
    assert gw.alarms is not None
    assert gw.alarms.engine is not None
    return {a.subject.device: a.alarm_id for a in gw.alarms.engine.active()
            if a.rule == "fire_alarm" and (a.state is AlarmState.FIRING or not firing_only)}


async def _publish(port: int, root: str, event: str) -> None:
    async with MqttPublisher("127.0.0.1", port, client_id=unique("sc")) as pub:
        for device in ANSWERS:
            payload = json.dumps({"ts": time.time(), "type": event}).encode()
            await pub.publish(f"{root}/p1/b1/{device}/event", payload, qos=1)
        await pub.flush(10)


async def test_fire_alarms_through_the_pipeline_make_the_scorecard(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd) -> None:
    reg = registry()
    settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                             registry=str(registry_yaml(tmp_path / "registry.yaml")))
    start = time.time_ns() // 1_000_000
    async with running_gateway(settings, reg) as gw:
        await _publish(mosquitto.port, settings.mqtt.topic_root, "fire_alarm")
        await wait_for(lambda: len(_fires(gw)) == 3, timeout_s=20, what="three fire alarms")
        assert gw.alarm_service is not None
        for device, alarm_id in _fires(gw).items():
            await gw.alarm_service.acknowledge(alarm_id, by="duty", disposition=ANSWERS[device],
                                               channel="api")
        await _publish(mosquitto.port, settings.mqtt.topic_root, "reset")
        await wait_for(lambda: not _fires(gw, firing_only=False), timeout_s=20,
                       what="fire alarms reset")
    end = time.time_ns() // 1_000_000 + 1
    period = Period(start, end)
    inputs = await collect(settings, reg, park="p1", period=period, as_of_ms=end)
    park = compute(inputs, park="p1", period=period, as_of_ms=end)
    assert (park.false_alarms.fired, park.false_alarms.judged,
            park.false_alarms.false_alarms) == (3, 3, 2)
    assert park.false_alarms.rate == 2 / 3
    assert (park.response.critical, park.response.acknowledged) == (3, 3)
    assert park.response.within_target_share == 1.0
    # Each fire also raised its zone's pre-alarm (one signal, not yet a confirmed fire).
    assert park.counts.by_class == {"fire": 6}
    assert park.counts.by_severity == {"critical": 3, "major": 3}
    ta = compute(inputs, park="p1", period=period, as_of_ms=end, tenant="ta")
    assert (ta.false_alarms.judged, ta.false_alarms.rate) == (2, 1.0)
    tb = compute(inputs, park="p1", period=period, as_of_ms=end, tenant="tb")
    assert (tb.false_alarms.judged, tb.false_alarms.rate) == (1, 0.0)
