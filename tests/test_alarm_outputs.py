"""The shapes alarms take outside the engine: topic, `alarms` point, retained document."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from gateway.alarms.outputs import alarm_line, alarm_topic, point_level, retained_payload
from rules.alarm import Alarm, AlarmState, Disposition, Severity, Subject

T0 = 1764059400000


def _alarm(**changes: object) -> Alarm:
    base = Alarm(alarm_id="a1b2c3", fingerprint="water_pressure_low|device:wp-0017",
                 rule="water_pressure_low", severity=Severity.MAJOR, state=AlarmState.FIRING,
                 subject=Subject(park="xz01", building="b3", floor="2", zone="east",
                                 device="wp-0017", tenant="hs-elec", kind="water_pressure",
                                 location="2F east riser"),
                 message="Pressure 0.08 MPa below 0.10 MPa", started_at_ms=T0,
                 updated_at_ms=T0 + 60000, value=0.08, fired_at_ms=T0 + 60000)
    return base.evolve(**changes)


def test_topics_for_device_zone_building_and_panel_point() -> None:
    assert alarm_topic(_alarm()) == "parkwatch/alarms/xz01/b3/wp-0017/water_pressure_low"
    zone = _alarm(rule="fire_confirmed", subject=Subject(park="xz01", building="b3", floor="2",
                                                         zone="east", kind="zone"))
    assert alarm_topic(zone) == "parkwatch/alarms/xz01/b3/zone-east/fire_confirmed"
    building = _alarm(rule="building_silent", subject=Subject(park="xz01", building="b3"))
    assert alarm_topic(building) == "parkwatch/alarms/xz01/b3/building/building_silent"
    point = _alarm(rule="fire_alarm", labels={"point": "1-02/#034"})
    assert alarm_topic(point) == "parkwatch/alarms/xz01/b3/wp-0017/fire_alarm@1-02_2F_23034"


def test_points_that_differ_get_different_topics() -> None:
    # Both used to become fire_alarm@L1_D2: one alarm's document overwrote the other's.
    plus, hash_ = (_alarm(rule="fire_alarm", labels={"point": p}) for p in ("L1+D2", "L1#D2"))
    assert alarm_topic(plus).endswith("/fire_alarm@L1_2BD2")
    assert alarm_topic(hash_).endswith("/fire_alarm@L1_23D2")
    assert point_level("L1_D2") == "L1_5FD2"


@given(st.text(min_size=1), st.text(min_size=1))
def test_the_point_level_is_one_to_one_and_topic_safe(a: str, b: str) -> None:
    if a != b:
        assert point_level(a) != point_level(b)
    for level in (point_level(a), point_level(b)):
        assert set(level) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                 "0123456789.-_")


@given(st.text(min_size=1))
def test_the_point_level_decodes_back(point: str) -> None:
    level = point_level(point)
    raw, i = bytearray(), 0
    while i < len(level):
        if level[i] == "_":
            raw.append(int(level[i + 1:i + 3], 16))
            i += 3
        else:
            raw.append(ord(level[i]))
            i += 1
    assert raw.decode() == point


def test_alarms_point_has_contract_tags_and_fields() -> None:
    assert alarm_line(_alarm()) == (
        "alarms,building=b3,device=wp-0017,floor=2,kind=water_pressure,park=xz01,"
        "rule=water_pressure_low,severity=major,tenant=hs-elec,zone=east "
        'alarm_id="a1b2c3",state="firing",message="Pressure 0.08 MPa below 0.10 MPa",'
        f"started_at_ms={T0}i,value=0.08 {T0 + 60000}")
    no_value = alarm_line(_alarm(value=None, subject=Subject(park="xz01", building="b3")))
    assert "value=" not in no_value
    assert ",device=" not in no_value
    assert "acknowledged_by" not in no_value


def test_an_acknowledgement_carries_who_what_and_how_long() -> None:
    acked = _alarm(state=AlarmState.ACKNOWLEDGED, acknowledged_by="王值班",
                   acknowledged_at_ms=T0 + 60000 + 95_500, ack_channel="sms",
                   disposition=Disposition.FALSE_ALARM, updated_at_ms=T0 + 155_500)
    line = alarm_line(acked)
    assert 'acknowledged_by="王值班"' in line
    assert 'disposition="false_alarm"' in line
    assert "ack_s=95.5" in line                  # from firing, not from the pending start
    # Later points of the same alarm keep them (a resolved alarm still says who acknowledged).
    resolved = acked.evolve(state=AlarmState.RESOLVED, resolved_at_ms=T0 + 200_000)
    assert "ack_s=95.5" in alarm_line(resolved)


def test_retained_document_is_the_contract_document_until_resolved_and_acknowledged() -> None:
    doc = json.loads(retained_payload(_alarm(), None))
    assert doc["alarm_id"] == "a1b2c3"
    assert doc["state"] == "firing"
    assert doc["started_at"] == "2025-11-25T08:30:00.000Z"
    assert doc["acknowledged_by"] is None
    resolved = _alarm(state=AlarmState.RESOLVED, resolved_at_ms=T0 + 120000)
    assert json.loads(retained_payload(resolved, None))["state"] == "resolved"
    done = resolved.evolve(acknowledged_by="duty", disposition=Disposition.REAL)
    assert retained_payload(done, None) == b""
