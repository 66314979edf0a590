"""translate.py: each ADU type and status bit → the events, lines and observations it gives."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.ingest.uitd.translate import Context, Translated, translate
from gateway.ingest.validate import Validator
from rules.observation import DeviceEvent
from sensors.base import EventType
from sensors.gb26875.adu import Adu, parse_adu
from sensors.gb26875.timelabel import encode_time_label
from sensors.pointmap import load_point_map
from sensors.registry import Registry
from tests.support.gb26875_vectors import UITD
from tests.support.paths import ROOT
from tests.support.uitd import component_adu

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 1, 10, 0, 0, tzinfo=TZ)
RX = int(NOW.timestamp() * 1000)
LABEL = encode_time_label(NOW - timedelta(seconds=5))


@pytest.fixture(scope="module")
def run(sample_registry: Registry):  # type: ignore[no-untyped-def]
    points = load_point_map(ROOT / "config" / "sample-park" / "points.csv", sample_registry)
    validator = Validator(registry=sample_registry, root="parks", timezones={},
                          default_timezone=TZ, max_payload_bytes=65536, max_age_s=86400,
                          max_future_s=300, points=points)
    panel = sample_registry.get("fp-0001")
    assert panel is not None

    def go(adu: bytes, *, untrusted: bool = False) -> Translated:
        parsed = parse_adu(adu)
        assert isinstance(parsed, Adu)
        ctx = Context(panel=panel, uitd_address=UITD, serial=5, received_at_ms=RX, timezone=TZ,
                      max_age_s=86400, max_future_s=300, points=points,
                      place=lambda p, t, pt, d, fb: validator.place(p, t, pt, d, feedback=fb),
                      event_line=validator.event_line, clock_untrusted=untrusted)
        return translate(parsed, adu, ctx)
    return go


def events(t: Translated) -> list[tuple[EventType, str]]:
    return [(o.type, o.point) for o in t.observations if isinstance(o, DeviceEvent)]


@pytest.mark.parametrize(("status", "expected"), [
    (0x0002, [EventType.FIRE_ALARM]),
    (0x0003, [EventType.FIRE_ALARM]),          # bit 0 never matters
    (0x0004, [EventType.FAULT]),
    (0x0008, [EventType.ISOLATED]),
    (0x0010, [EventType.SUPERVISORY]),
    (0x0100, [EventType.FAULT]),               # power fault
    (0x0006, [EventType.FIRE_ALARM, EventType.FAULT]),
    (0x0000, [EventType.RESTORED]),
    (0x0001, [EventType.RESTORED]),
])
def test_component_status_bits(run, status: int, expected: list[EventType]) -> None:  # type: ignore[no-untyped-def]
    t = run(component_adu(40, 131082, status, label=LABEL))
    assert [e for e, _ in events(t)] == expected
    assert {p for _, p in events(t)} == {"L1-D024"}
    first = t.observations[0]
    assert isinstance(first, DeviceEvent)
    assert first.place is not None
    assert (first.place.floor, first.place.zone, first.place.tenant) == ("2", "east", "hs-elec")
    assert first.ts_ms == RX - 5000                  # the object's local time label
    assert len(t.lines) == len(expected)
    assert all(line.startswith("events,") for line in t.lines)


def test_power_fault_detail_and_dedup_keys(run) -> None:  # type: ignore[no-untyped-def]
    t = run(component_adu(40, 131082, 0x0106, label=LABEL))
    keys = [o.dedup_key for o in t.observations if isinstance(o, DeviceEvent)]
    assert len(set(keys)) == len(keys) == 2
    assert all(k is not None and k.startswith(f"uitd:{UITD.hex()}|5|") for k in keys)
    fault = t.observations[1]
    assert isinstance(fault, DeviceEvent)
    assert "power fault" in fault.detail


def test_supervisory_component_fire_is_supervisory_start(run) -> None:  # type: ignore[no-untyped-def]
    # L1-W001 is a water-flow indicator (96) at 1/1/131084.
    t = run(component_adu(96, 131084, 0x0002, label=LABEL))
    (obs,) = t.observations
    assert isinstance(obs, DeviceEvent)
    assert (obs.type, obs.point) == (EventType.SUPERVISORY, "L1-W001")
    assert obs.detail.startswith("start")
    t = run(component_adu(96, 131084, 0x0040, label=LABEL))
    assert t.observations[0].detail.startswith("feedback")


def test_unmapped_component_keeps_its_raw_address(run) -> None:  # type: ignore[no-untyped-def]
    (obs,) = run(component_adu(42, 4242, 0x0002, label=LABEL)).observations
    assert isinstance(obs, DeviceEvent)
    assert (obs.point, obs.place) == ("1-1-4242", None)


def test_system_status_and_reset(run) -> None:  # type: ignore[no-untyped-def]
    adu = bytes((1, 1, 1, 1)) + (0x2000 | 0x0002).to_bytes(2, "little") + LABEL
    assert events(run(adu)) == [(EventType.RESET, ""), (EventType.FIRE_ALARM, "sys1-1")]
    adu = bytes((1, 1, 1, 1)) + (0x0100).to_bytes(2, "little") + LABEL
    assert events(run(adu)) == [(EventType.FAULT, "sys1-1")]


def test_analog_values_become_telemetry(run) -> None:  # type: ignore[no-untyped-def]
    # type 3: sys 1/1, component 40 at 131082, analog type 5 (kPa, /10): 3500 → 350 kPa.
    def analog(kind: int, raw: int) -> bytes:
        return (bytes((3, 1, 1, 1, 40)) + (131082).to_bytes(4, "little") + bytes((kind,))
                + raw.to_bytes(2, "little", signed=True) + LABEL)
    (line,) = run(analog(5, 3500)).lines
    assert line.startswith("water_pressure,")
    assert "pressure_mpa=0.35" in line
    assert "zone=east" in line
    assert "point=L1-D024" in line
    (line,) = run(analog(3, 215)).lines
    assert line.startswith("temperature,")
    assert "temperature_c=21.5" in line
    (line,) = run(analog(8, 2200)).lines
    assert line.startswith("panel_analog,")
    assert 'unit="V"' in line
    assert run(analog(5, 3500)).observations == []


def test_facility_and_uitd_operations(run) -> None:  # type: ignore[no-untyped-def]
    op = bytes((4, 1, 1, 1, 0b0001_0011, 7)) + LABEL
    assert [e for e, _ in events(run(op))] == [EventType.RESET, EventType.MUTE, EventType.TEST]
    answer = run(bytes((24, 1, 0x20, 1)) + LABEL)
    assert answer.duty_answer_ms == RX
    assert answer.observations == []


def test_uitd_status_and_time(run) -> None:  # type: ignore[no-untyped-def]
    t = run(bytes((21, 1, 0b0010_1000)) + LABEL)
    ((obs_type, point),) = events(t)
    assert (obs_type, point) == (EventType.FAULT, "uitd")
    detail = t.observations[0].detail
    assert "power fault" in detail
    assert "comm fault" in detail
    assert events(run(bytes((21, 1, 0x01)) + LABEL)) == [(EventType.RESTORED, "uitd")]
    t = run(bytes((28, 1)) + encode_time_label(NOW + timedelta(hours=1)))
    assert t.clock_offset_s == pytest.approx(3600)


def test_untrusted_times_get_the_receive_time(run) -> None:  # type: ignore[no-untyped-def]
    old = encode_time_label(NOW - timedelta(days=30))
    t = run(component_adu(40, 131082, 0x0002, label=old))
    assert (t.observations[0].ts_ms, t.untrusted) == (RX, 1)
    t = run(component_adu(40, 131082, 0x0002, label=LABEL), untrusted=True)
    assert (t.observations[0].ts_ms, t.untrusted) == (RX, 1)
