"""threshold: severity tiers with ``for`` durations, a separate clear condition (hysteresis).

One instance per (rule, device), with the device's limits already resolved. Each tier remembers
since when it has held (event time). The alarm takes the severity of the most severe tier that
has held for its ``for_s``; it de-escalates when a higher tier is left by more than
``hysteresis``, and resolves only when the clear condition holds. Between the tiers and the
clear condition (the hysteresis band) nothing changes, so a value oscillating around a
threshold gives one alarm, not one per crossing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rules.alarm import AlarmState, Severity
from rules.kinds.base import Ledger, device_fp, render, subject_of
from rules.model import DIRECTION, OPS, UNITS, ThresholdRule
from sensors.registry import Device


class _Tier:
    __slots__ = ("breach", "for_ms", "leave", "severity", "threshold")

    def __init__(self, severity: Severity, op: str, threshold: float, for_s: float,
                 hysteresis: float) -> None:
        self.severity = severity
        self.threshold = threshold
        self.for_ms = int(for_s * 1000)
        self.breach: Callable[[float, float], bool] = OPS[op]
        d = DIRECTION[op]
        # Once held, a tier is left only when the value is past it by more than the hysteresis.
        self.leave: Callable[[float], bool] = (
            (lambda v: not self.breach(v, threshold)) if d == 0
            else (lambda v: (threshold - v) * d > hysteresis))


class ThresholdCheck:
    __slots__ = ("_clear", "_fp", "_lowest", "_rule", "_since", "_subject", "_tiers", "_value",
                 "key", "metric", "wants_tick")

    def __init__(self, rule: ThresholdRule, device: Device, tiers: list[_Tier],
                 clear: Callable[[float], bool]) -> None:
        self._rule = rule
        self._subject = subject_of(device)
        self._fp = device_fp(rule.name, device.device)
        self._tiers = tiers                       # most severe first
        self._lowest = tiers[-1]
        self._clear = clear
        self._since: list[int | None] = [None] * len(tiers)
        self._value: float = 0.0
        self.key = f"{rule.name}|{device.device}"
        self.metric = rule.metric
        self.wants_tick = False

    @classmethod
    def build(cls, rule: ThresholdRule, device: Device) -> ThresholdCheck | None:
        tiers = [_Tier(t.severity, t.op, thr, t.for_s, rule.hysteresis)
                 for t in sorted(rule.tiers, key=lambda t: -t.severity.rank)
                 if (thr := t.threshold_for(device)) is not None]
        if not tiers:
            return None   # limit-only rule and this device has no such limit
        lowest = tiers[-1]
        clear_thr = rule.clear.threshold_for(device) if rule.clear else None
        if rule.clear is not None and clear_thr is not None:
            op = OPS[rule.clear.op]
            return cls(rule, device, tiers, lambda v: op(v, clear_thr))
        return cls(rule, device, tiers, lowest.leave)

    def on_reading(self, value: float, ts: int, book: Ledger) -> None:
        # Fast path, the common case: nothing held, not breached, no alarm waiting to clear.
        if (self._since[-1] is None and not self._lowest.breach(value, self._lowest.threshold)
                and self._fp not in book.active):
            return
        self._value = value
        for i, tier in enumerate(self._tiers):
            if tier.breach(value, tier.threshold):
                if self._since[i] is None:
                    self._since[i] = ts
            elif self._since[i] is not None and tier.leave(value):
                self._since[i] = None
        self._evaluate(ts, book, from_reading=True)

    def on_tick(self, now: int, book: Ledger) -> None:
        self._evaluate(now, book, from_reading=False)

    def _evaluate(self, now: int, book: Ledger, *, from_reading: bool) -> None:
        reached = next((t for t, s in zip(self._tiers, self._since, strict=True)
                        if s is not None and now - s >= t.for_ms), None)
        held = [(t, s) for t, s in zip(self._tiers, self._since, strict=True) if s is not None]
        self.wants_tick = any(now - s < t.for_ms for t, s in held)
        cur = book.get(self._fp)
        if reached is not None:
            self._open(book, reached, now, firing=True)
        elif held:
            if cur is None or cur.state is AlarmState.PENDING:
                self._open(book, held[0][0], now, firing=False)
        elif cur is not None and from_reading and (
                cur.state is AlarmState.PENDING or self._clear(self._value)):
            book.resolve(self._fp, now, self._message(cur.severity, self._lowest) + " (cleared)")

    def _open(self, book: Ledger, tier: _Tier, at: int, *, firing: bool) -> None:
        started = min(s for s in self._since if s is not None)
        book.open(self._fp, rule=self._rule.name, subject=self._subject,
                  severity=tier.severity, message=self._message(tier.severity, tier),
                  at_ms=at, firing=firing, value=float(self._value), started_ms=started)

    def _message(self, severity: Severity, tier: _Tier) -> str:
        rule = self._rule
        return render(rule.message_template, self._subject, rule.name, severity,
                      value=self._value, threshold=tier.threshold,
                      unit=UNITS.get(rule.metric, ""), metric=rule.metric,
                      for_s=tier.for_ms / 1000)

    def dump(self) -> dict[str, Any] | None:
        if all(s is None for s in self._since):
            return None
        return {"since": self._since, "value": self._value}

    def load(self, data: dict[str, Any]) -> None:
        self._since = list(data["since"])
        self._value = float(data["value"])
        self.wants_tick = True
