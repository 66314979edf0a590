"""The tenant register's people receive notifications (issue 12, point 3): a real Gateway's
register, the real rule engine and SQLite store, and the Notifier planning outbox rows for a
fire at a tenant's detector (dry run: nothing leaves the machine)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gateway.metrics import Metrics
from gateway.notify.notifier import Notifier
from gateway.runtime.gateway import Gateway
from rules.observation import DeviceEvent
from sensors.base import EventType
from sensors.registry import Registry
from tests.support.gateway import make_settings
from tests.support.paths import ROOT

TENANTS = ROOT / "config" / "sample-park" / "tenants.yaml"
ROUTING = """\
notify:
  channels: {sms: {type: sms_aliyun}}
  contacts:
    duty: {phone: "+8613800000001", channels: [sms]}
    li-hs: {phone: "+86 138 0000 0011", lang: en, channels: [sms]}
  tenants: {hs-elec: [li-hs]}
  tenant_register: {channels: [sms]}
  duty_officer: duty
  route:
    receivers: [tenant]
"""


async def _audit(lines: list[str]) -> None:
    return None


async def test_a_tenant_fire_pages_its_register_people_once_each(
        tmp_path: Path, sample_registry: Registry) -> None:
    routing = tmp_path / "notify.yaml"
    routing.write_text(ROUTING, encoding="utf-8")
    settings = make_settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1",
                             influx_url="http://127.0.0.1:1", tenants=str(TENANTS),
                             notify={"config": str(routing), "dry_run": True})
    gw = Gateway(settings=settings, registry=sample_registry)
    keeper = gw.alarms
    assert keeper is not None
    await keeper.open()
    try:
        notifier = Notifier.from_settings(settings, store=keeper.store, metrics=Metrics(),
                                          audit=_audit, env={}, tenants=gw.tenants)
        assert notifier is not None
        detector = next(d for d in sample_registry if d.tenant == "hs-elec"
                        and d.kind == "smoke")
        now = int(time.time() * 1000)
        transitions = keeper.observe([DeviceEvent(device=detector.device, ts_ms=now,
                                                  received_at_ms=now,
                                                  type=EventType("fire_alarm"))], now)
        rows = notifier.plan(transitions, now)
    finally:
        await keeper.close()
    sms = {r.recipient: json.loads(r.notification_json) for r in rows if r.channel == "sms"}
    # li-hs (the routing file's contact, who is hs-elec's 管理人 by phone) once, in English;
    # the 责任人 李建国 because a fire is critical; the duty officer on every critical alarm.
    assert {key.split(":")[4] for key in (r.key for r in rows)} == {
        "li-hs", "hs-elec.fire-responsible", "duty"}
    assert set(sms) == {"+86 138 0000 0011", "+8613800000013", "+8613800000001"}
    assert sms["+8613800000013"]["text"].startswith("[特急]火警")        # register lang: zh-CN
    assert sms["+86 138 0000 0011"]["text"].startswith("[Critical] Fire alarm")
