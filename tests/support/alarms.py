"""Alarms with chosen fields: one with every optional field at its default, one with none."""

from __future__ import annotations

from typing import Any

from rules.alarm import Alarm, AlarmState, Disposition, Maintenance, Severity, Subject

T0 = 1_795_000_000_000  # 2026-11-18, a fixed clock for every test


def make_alarm(alarm_id: str = "a1", **overrides: Any) -> Alarm:
    """A firing alarm with every optional field left at its default unless overridden."""
    fields: dict[str, Any] = {
        "alarm_id": alarm_id, "fingerprint": f"water_pressure_low/{alarm_id}",
        "rule": "water_pressure_low", "severity": Severity.MAJOR, "state": AlarmState.FIRING,
        "subject": Subject(park="xz01", building="b3", floor="2", zone="east",
                           device=f"wp-{alarm_id}", kind="water_pressure"),
        "message": "Hydrant pressure low", "started_at_ms": T0, "updated_at_ms": T0 + 1000,
        "fired_at_ms": T0 + 1000,
    }
    fields.update(overrides)
    return Alarm(**fields)


def full_alarm() -> Alarm:
    """An alarm with every field set to a non-default value."""
    return Alarm(
        alarm_id="full", fingerprint="gas_high/gs-9", rule="gas_high", severity=Severity.CRITICAL,
        state=AlarmState.ACKNOWLEDGED,
        subject=Subject(park="xz01", building="b2", floor="B1", zone="plant", device="gs-9",
                        tenant="hs-elec", kind="gas", location="B1 boiler room, north wall"),
        message="Gas 52 %LEL ≥ 50 %LEL", started_at_ms=T0, updated_at_ms=T0 + 90_000,
        value=52.25, fired_at_ms=T0 + 30_000, acknowledged_by="alice",
        acknowledged_at_ms=T0 + 90_000, ack_channel="api", disposition=Disposition.FALSE_ALARM,
        resolved_at_ms=None, maintenance=Maintenance.TEST, inhibited_by="silent/b2",
        labels={"team": "boiler", "ünïcode": "ok"},
    )
