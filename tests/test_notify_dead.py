"""A notification nobody will deliver raises an alarm of its own, routed like any other; the
alarm resolves once the channel delivers again."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from rules.alarm import AlarmState, Severity, Subject
from rules.engine import Engine
from rules.model import RuleSet
from rules.system import NOTIFICATION_DEAD, SYSTEM_KIND, HealthCondition
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.influx import influx_rows
from tests.support.notify import (
    DT_SECRET,
    WH_SECRET,
    routing,
    set_channel_env,
    webhook_bodies,
    write_notify_config,
)
from tests.support.notify_servers import ProviderServer
from tests.support.waiting import wait_for


def test_a_condition_is_one_alarm_per_rule_and_key_until_cleared(
        sample_registry: Registry) -> None:
    ids = iter(f"s{i}" for i in range(100))
    engine = Engine(rules=RuleSet(rules=()), registry=sample_registry, new_id=lambda: next(ids))
    subject = Subject(park="xz01", building="b1", kind=SYSTEM_KIND, location="channel sms")
    raised = HealthCondition(NOTIFICATION_DEAD, "sms", subject, Severity.MAJOR, "sms is failing")
    first = engine.condition(raised, 1_000)
    assert [(t.after.rule, t.after.state, t.after.severity) for t in first] == [
        (NOTIFICATION_DEAD, AlarmState.FIRING, Severity.MAJOR)]
    assert engine.condition(raised, 2_000) == []             # still the same alarm
    worse = engine.condition(HealthCondition(NOTIFICATION_DEAD, "sms", subject, Severity.CRITICAL,
                                       "a fire alarm was lost"), 3_000)
    assert [t.after.severity for t in worse] == [Severity.CRITICAL]
    cleared = engine.condition(HealthCondition(NOTIFICATION_DEAD, "sms", subject, Severity.MAJOR,
                                         "delivers again", active=False), 4_000)
    assert [t.after.state for t in cleared] == [AlarmState.RESOLVED]
    # A restart keeps a system alarm (its rule is not in the rule files, but it is known).
    again = engine.condition(raised, 5_000)
    state = engine.state()
    restored = Engine(rules=RuleSet(rules=()), registry=sample_registry,
                      new_id=lambda: next(ids), restored=state)
    restored.tick(6_000)
    assert [a.alarm_id for a in restored.active()] == [again[0].after.alarm_id]
    with pytest.raises(ValueError, match="unknown system rule"):
        HealthCondition("fire_alarm", "x", subject, Severity.MAJOR, "no")


@pytest.mark.integration
async def test_a_dead_notification_raises_an_alarm_that_reaches_the_duty_officer(
        tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd, sample_registry: Registry,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with ProviderServer(dingtalk_secret=DT_SECRET, webhook_secret=WH_SECRET) as srv:
        set_channel_env(monkeypatch, srv)
        doc = routing(srv.url, escalate_after_s=600)
        doc["notify"]["duty_officer"] = "wang-duty"
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                                 notify={"config": str(write_notify_config(tmp_path, doc))})
        smoke = next(d for d in sample_registry if d.tenant == "hs-elec" and d.kind == "smoke")
        topic = f"{settings.mqtt.topic_root}/{smoke.park}/{smoke.building}/{smoke.device}/event"
        # The robot's signing secret was rotated on DingTalk's side: every send is refused for
        # good (errcode 310000), and the channel has no fallback.
        srv.dingtalk_secret = "SEC" + "1" * 64
        async with running_gateway(settings, sample_registry) as gw, \
                MqttPublisher("127.0.0.1", mosquitto.port, client_id=unique("d")) as pub:
            await pub.publish(topic, json.dumps(
                {"ts": time.time(), "type": "fire_alarm", "point": "1-01-001"}).encode())
            await pub.flush(10)

            def dead_alarms() -> list[dict[str, object]]:
                return [d for d in webhook_bodies(srv, "/duty") if d["rule"] == NOTIFICATION_DEAD]

            await wait_for(lambda: bool(dead_alarms()), timeout_s=15,
                           what="the duty officer told that a notification died")
            dead = dead_alarms()[0]
            # A fire alarm did not reach someone: that is critical, and says where and how.
            assert dead["severity"] == "critical"
            assert dead["state"] == "firing"
            assert (dead["park"], dead["building"]) == (smoke.park, smoke.building)
            assert "robot" in str(dead["message"])
            assert gw.alarms is not None
            assert gw.alarms.engine is not None
            active = [a for a in gw.alarms.engine.active() if a.rule == NOTIFICATION_DEAD]
            assert len(active) == 1
            # DingTalk is fixed; the next message through the robot resolves the alarm.
            srv.dingtalk_secret = DT_SECRET
            other = next(d for d in sample_registry if d.tenant == "hs-elec"
                         and d.kind == "smoke" and d.device != smoke.device)
            await pub.publish(
                f"{settings.mqtt.topic_root}/{other.park}/{other.building}/{other.device}/event",
                json.dumps({"ts": time.time(), "type": "fire_alarm"}).encode())
            await pub.flush(10)
            await wait_for(lambda: not [a for a in gw.alarms.engine.active()  # type: ignore[union-attr]
                                        if a.rule == NOTIFICATION_DEAD],
                           timeout_s=15, what="the dead-notification alarm resolved")
            await wait_for(lambda: any(d["state"] == "resolved" for d in dead_alarms()),
                           timeout_s=15, what="the duty officer told it resolved")
    rows = influx_rows(influxd, settings.influx.database,
                       f"SELECT \"state\" FROM \"alarms\" WHERE \"rule\" = '{NOTIFICATION_DEAD}'")
    assert [r[1] for r in rows] == ["firing", "resolved"]
