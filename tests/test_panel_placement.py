"""MQTT panel events placed by the point map (gateway/ingest/validate.py → rules/placement.py)."""

from __future__ import annotations

import json
import time
from zoneinfo import ZoneInfo

from gateway.ingest.validate import Validator
from rules.observation import DeviceEvent
from sensors.base import EventType
from sensors.pointmap import load_point_map
from sensors.registry import Registry
from tests.support.paths import ROOT


def test_mqtt_panel_events_are_placed_and_unmapped_points_counted(
        sample_registry: Registry) -> None:
    points = load_point_map(ROOT / "config" / "sample-park" / "points.csv", sample_registry)
    unmapped: list[int] = []
    v = Validator(registry=sample_registry, root="parks", timezones={},
                  default_timezone=ZoneInfo("Asia/Shanghai"), max_payload_bytes=65536,
                  max_age_s=86400, max_future_s=300, points=points,
                  on_unmapped=lambda: unmapped.append(1))
    panel = sample_registry.get("fp-0001")
    assert panel is not None
    topic = f"parks/{panel.park}/{panel.building}/fp-0001/event"
    now = int(time.time() * 1000)

    def send(point: str, type_: str = "fire_alarm") -> DeviceEvent:
        payload = json.dumps({"ts": now / 1000, "type": type_, "point": point}).encode()
        (obs,) = v.validate(topic, payload, now).observations
        assert isinstance(obs, DeviceEvent)
        return obs

    fire = send("L1-D024")
    assert fire.type is EventType.FIRE_ALARM
    assert fire.place is not None
    assert (fire.place.floor, fire.place.zone, fire.place.tenant) == ("2", "east", "hs-elec")
    flow = send("L1-W001")                       # a water-flow indicator: supervisory, start
    assert (flow.type, flow.detail) == (EventType.SUPERVISORY, "start")
    assert unmapped == []
    raw = send("9-99-999")
    assert raw.place is None
    assert raw.type is EventType.FIRE_ALARM
    assert unmapped == [1]
