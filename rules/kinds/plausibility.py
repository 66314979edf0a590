"""plausibility: a sensor that lies is a device FAULT, never the hazard it imitates.

Checks, per reading of one metric: out of the plausible ``band``; an impossible ``jump``
(|Δ| > max_step between readings closer than within_s); ``stuck`` (the identical value for
≥ count readings spanning ≥ min_span_s). An implausible reading raises the fault alarm and is
withheld from every other rule of the same device (the engine drops the metric from the
values it passes on): an implausible 0.0 MPa never raises low pressure, and a stuck 0.30 never
"looks fine" and clears a real low-pressure alarm.

After any implausible reading the sensor is on probation: its values are withheld until
``settle_count`` consecutive plausible readings arrive; then the fault resolves and values flow
again. A new level that persists after a jump is therefore believed after settle_count readings
— on purpose: a real burst that a transmitter reports as one big step must not be hidden
forever, and the fault alarm has already told people to doubt that sensor.
"""

from __future__ import annotations

from typing import Any

from rules.kinds.base import Ledger, device_fp, fmt, render, subject_of
from rules.model import UNITS, PlausibilityRule
from sensors.registry import Device


class PlausibilityCheck:
    __slots__ = ("_fp", "_last_ts", "_last_v", "_reason", "_rule", "_run", "_run_start",
                 "_settled", "_subject", "key", "metric")

    def __init__(self, rule: PlausibilityRule, device: Device) -> None:
        self._rule = rule
        self._subject = subject_of(device)
        self._fp = device_fp(rule.name, device.device)
        self._last_v: float | None = None
        self._last_ts = 0
        self._run = 0            # readings in the current run of identical values
        self._run_start = 0
        self._reason: str | None = None   # set while on probation
        self._settled = 0
        self.key = f"{rule.name}|{device.device}"
        self.metric = rule.metric

    @classmethod
    def build(cls, rule: PlausibilityRule, device: Device) -> PlausibilityCheck:
        return cls(rule, device)

    def check(self, value: float, ts: int, book: Ledger) -> bool:
        """True when the reading may feed the other rules of this device."""
        reason = self._implausible(value, ts)
        self._last_v, self._last_ts = value, ts
        if reason is not None:
            self._reason, self._settled = reason, 0
            rule = self._rule
            message = render(rule.message_template, self._subject, rule.name, rule.severity,
                             value=value, metric=rule.metric, unit=UNITS.get(rule.metric, ""),
                             reason=reason)
            book.open(self._fp, rule=rule.name, subject=self._subject, severity=rule.severity,
                      message=message, at_ms=ts, value=float(value))
            return False
        if self._reason is None:
            return True
        self._settled += 1
        if self._settled < self._rule.settle_count:
            return False
        self._reason = None
        book.resolve(self._fp, ts)
        return True

    def _implausible(self, v: float, ts: int) -> str | None:
        rule, last = self._rule, self._last_v
        if last is not None and v == last:
            self._run += 1
        else:
            self._run, self._run_start = 1, ts
        if rule.band is not None and not rule.band.min <= v <= rule.band.max:
            return f"{fmt(v)} outside the plausible band {fmt(rule.band.min)}..{fmt(rule.band.max)}"
        if (rule.jump is not None and last is not None and abs(v - last) > rule.jump.max_step
                and ts - self._last_ts < rule.jump.within_s * 1000):
            return (f"impossible jump {fmt(last)} -> {fmt(v)} in "
                    f"{fmt((ts - self._last_ts) / 1000)} s")
        if (rule.stuck is not None and self._run >= rule.stuck.count
                and ts - self._run_start >= rule.stuck.min_span_s * 1000):
            return (f"stuck at {fmt(v)} for {self._run} readings "
                    f"({fmt((ts - self._run_start) / 1000)} s)")
        return None

    def dump(self) -> dict[str, Any] | None:
        if self._last_v is None:
            return None
        return {"last_v": self._last_v, "last_ts": self._last_ts, "run": self._run,
                "run_start": self._run_start, "reason": self._reason, "settled": self._settled}

    def load(self, data: dict[str, Any]) -> None:
        self._last_v, self._last_ts = data["last_v"], data["last_ts"]
        self._run, self._run_start = data["run"], data["run_start"]
        self._reason, self._settled = data["reason"], data["settled"]
