"""A park history with known numbers for the scorecard tests (tests/test_scorecard_*.py).

The history runs through the real rule engine and is stored by the real alarm store, so the
scorecard reads exactly what a gateway would have written. Every time is an offset from
``T0``, the start of the day the scorecard covers; the expected figures are worked out by hand
in the tests from the timeline below.
"""

from __future__ import annotations

import itertools
import urllib.request
from pathlib import Path

from gateway.alarms.store import AlarmStore
from gateway.tools.devservices import Influxd
from rules.alarm import Disposition, Maintenance, Transition
from rules.engine import Engine
from rules.loader import load_rules
from rules.observation import DeviceEvent, Reading, StatusChange
from sensors.base import EventType
from sensors.registry import Registry, build_registry
from tests.support.paths import ROOT

T0 = 1_793_462_400_000          # 2026-11-01 00:00 Asia/Shanghai (UTC+8)
H = 3_600_000
S = 1000
DAY = 24 * H
AS_OF = T0 + 30 * H             # when the scorecard is made: 6 h after the day ended

DEVICES: tuple[dict[str, object], ...] = (
    {"device": "fd-1", "kind": "smoke", "zone": "z1", "tenant": "ta"},
    {"device": "fd-2", "kind": "smoke", "zone": "z2", "tenant": "tb"},
    {"device": "mc-1", "kind": "manual_call_point", "zone": "z3", "tenant": "ta"},
    {"device": "wp-1", "kind": "water_pressure", "zone": "w", "tenant": "ta"},
    {"device": "wl-1", "kind": "water_level", "zone": "w", "tenant": "tb",
     "limits": {"low_m": 1.0, "high_m": 5.0}},
)


def registry() -> Registry:
    # A week's report interval: no device falls silent by the clock within the day, so every
    # offline span in the history is one the test drives on purpose.
    base = {"park": "p1", "building": "b1", "floor": "1", "report_interval_s": 7 * 86400}
    return build_registry([(i, {**base, **d}) for i, d in enumerate(DEVICES)], source="test")


def registry_yaml(path: Path) -> Path:
    import yaml

    base = {"park": "p1", "building": "b1", "floor": "1", "report_interval_s": 7 * 86400}
    path.write_text(yaml.safe_dump({"devices": [{**base, **d} for d in DEVICES]}))
    return path


#: The tenant register of the park (sensors/tenants.py): company names and people for the page.
TENANTS = (
    {"id": "ta", "name": "华山电子有限公司", "fire_hazard_class": "丙", "floor_area_m2": 5200,
     "three_in_one": False,
     "fire_safety_responsible": {"name": "王强", "phone": "13800000001"},
     "fire_safety_manager": {"name": "李娜", "phone": "13800000002"}},
    {"id": "tb", "name": "青松化工股份有限公司", "fire_hazard_class": "甲",
     "floor_area_m2": 8800, "three_in_one": False,
     "fire_safety_responsible": {"name": "赵刚", "phone": "13900000003"},
     "fire_safety_manager": {"name": "陈静", "phone": "13900000004"}},
)


def tenants_yaml(path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"tenants": list(TENANTS)}, allow_unicode=True),
                    encoding="utf-8")
    return path


class _Driver:
    def __init__(self, reg: Registry) -> None:
        ids = itertools.count(1)
        self.engine = Engine(rules=load_rules(ROOT / "config" / "rules"), registry=reg,
                             new_id=lambda: f"a{next(ids)}")
        self.transitions: list[Transition] = []

    def tick(self, at: int) -> None:
        # The gateway's 1 s clock, at the moments that matter: expiries and pending alarms.
        self.transitions += self.engine.tick(at)

    def event(self, at: int, device: str, kind: EventType, point: str = "") -> str:
        self.tick(at)
        out = self.engine.observe(DeviceEvent(device, at, kind, at, point=point), at)
        self.transitions += out
        return next((t.after.alarm_id for t in out if t.after.subject.device == device
                     and t.before is None), "")

    def reading(self, at: int, device: str, **values: float) -> None:
        self.tick(at)
        self.transitions += self.engine.observe(Reading(device, at, values, at), at)

    def status(self, at: int, device: str, online: bool) -> None:
        self.tick(at)
        self.transitions += self.engine.observe(StatusChange(device, online, at), at)

    def ack(self, at: int, alarm_id: str, disposition: Disposition) -> None:
        self.transitions.append(self.engine.acknowledge(
            alarm_id, by="duty", disposition=disposition, channel="api", now_ms=at))

    def maintenance(self, at: int, device: str, mode: Maintenance, until: int) -> None:
        self.transitions += self.engine.set_maintenance(
            scope="device", target=device, mode=mode, until_ms=until, by="tech", now_ms=at)


def drive(reg: Registry) -> _Driver:
    """The day, in order (offsets from T0):

    fire alarms (fire_alarm, critical), reset each time after the answer:
      01:00 fd-1, acknowledged +60 s false_alarm          (tenant ta)
      02:00 fd-2, acknowledged +240 s real                (tenant tb)
      03:00 mc-1, acknowledged +120 s false_alarm         (tenant ta)
      04:00 fd-1, never acknowledged                      (tenant ta)
      05:00 fd-2 under a test window (04:30-06:00), acknowledged +60 s test
      20:00 fd-1, acknowledged +30 s false_alarm
    device health:
      06:00-08:00 wp-1 fault;  10:00-13:00 fd-2 isolated;  12:00-16:00 wl-1 offline (its Will)
    limits:
      09:00-09:30 wp-1 pressure 0.05 MPa (< 0.10);  20:00-22:00 wl-1 level 5.5 m (> 5.0)
    maintenance:
      21:00 wp-1 isolated until 23:00 (still in force: nobody lifted it)
    """
    d = _Driver(reg)
    d.reading(T0, "wp-1", pressure_mpa=0.30)
    d.reading(T0, "wl-1", level_m=3.0)
    for hour, device, ack_s, disposition in ((1, "fd-1", 60, Disposition.FALSE_ALARM),
                                             (2, "fd-2", 240, Disposition.REAL),
                                             (3, "mc-1", 120, Disposition.FALSE_ALARM),
                                             (4, "fd-1", None, None)):
        alarm = d.event(T0 + hour * H, device, EventType.FIRE_ALARM)
        if ack_s is not None and disposition is not None:
            d.ack(T0 + hour * H + ack_s * S, alarm, disposition)
        d.event(T0 + hour * H + 1800 * S, device, EventType.RESET)
    d.maintenance(T0 + 4 * H + 1800 * S, "fd-2", Maintenance.TEST, T0 + 6 * H)
    alarm = d.event(T0 + 5 * H, "fd-2", EventType.FIRE_ALARM)
    d.ack(T0 + 5 * H + 60 * S, alarm, Disposition.TEST)
    d.event(T0 + 5 * H + 300 * S, "fd-2", EventType.RESET)
    d.event(T0 + 6 * H, "wp-1", EventType.FAULT)
    d.event(T0 + 8 * H, "wp-1", EventType.RESTORED)
    d.reading(T0 + 9 * H, "wp-1", pressure_mpa=0.05)
    d.reading(T0 + 9 * H + 20 * S, "wp-1", pressure_mpa=0.05)
    d.reading(T0 + 9 * H + 1800 * S, "wp-1", pressure_mpa=0.30)
    d.event(T0 + 10 * H, "fd-2", EventType.ISOLATED)
    d.status(T0 + 12 * H, "wl-1", False)
    d.tick(T0 + 12 * H + S)
    d.event(T0 + 13 * H, "fd-2", EventType.RESTORED)
    d.status(T0 + 16 * H, "wl-1", True)
    alarm = d.event(T0 + 20 * H, "fd-1", EventType.FIRE_ALARM)
    d.reading(T0 + 20 * H, "wl-1", level_m=5.5)
    d.ack(T0 + 20 * H + 30 * S, alarm, Disposition.FALSE_ALARM)
    d.event(T0 + 20 * H + 1800 * S, "fd-1", EventType.RESET)
    d.maintenance(T0 + 21 * H, "wp-1", Maintenance.ISOLATED, T0 + 23 * H)
    d.reading(T0 + 22 * H, "wl-1", level_m=2.0)
    return d


async def store_history(path: Path, reg: Registry) -> list[Transition]:
    """Drive the day and store it as the gateway does (transitions and engine state)."""
    d = drive(reg)
    async with AlarmStore(path) as store:
        await store.apply(d.transitions, engine_state_json=d.engine.state().to_json())
    return d.transitions


#: Status transitions (hour offset from T0, online). Hand-worked online time in the day:
#: fd-1 24 h (online since before the day), fd-2 12 h (offline 06-18), mc-1 never heard 0 h,
#: wp-1 12 h (from 12:00), wl-1 19 h (offline before the day, online 01-12 and 16-24).
STATUS = {"fd-1": [(-1, True)], "fd-2": [(0, True), (6, False), (18, True)],
          "wp-1": [(12, True)], "wl-1": [(-2, False), (1, True), (12, False), (16, True)]}


def write_status(influxd: Influxd, db: str) -> None:
    """:data:`STATUS` as ``device_status`` points in database ``db`` of a real InfluxDB."""
    influxd.query(f'CREATE DATABASE "{db}"')
    # wl-1's points are in the format written before gateway-owned liveness (a reason, no
    # source); a periodic snapshot inside the period is not a transition and is not read (this
    # one contradicts the history on purpose: it must change nothing).
    lines = [f"device_status,device={d},kind=x,park=p1 online={str(up).lower()},"
             + (f'reason="reported" {T0 + h * H}' if d == "wl-1" else
                f'source="traffic" {T0 + h * H}')
             for d, changes in STATUS.items() for h, up in changes]
    lines.append(f'device_status,device=mc-1,kind=x,park=p1 online=true,source="snapshot" '
                 f"{T0 + 3 * H}")
    req = urllib.request.Request(f"{influxd.url}/write?db={db}&precision=ms",
                                 data="\n".join(lines).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 204
