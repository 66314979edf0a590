"""state_duration: a metric held at one value for longer than ``for_s``.

The typical case is a normally-closed fire door (``match: {modes: [normally_closed]}``) with
``open == true`` for more than 60 s. The alarm is pending from the first reading in that state
(event time) and fires on the clock in ``tick``: a door that stays open sends no new reading,
and a duration rule that only re-evaluates on new data (Kapacitor's ``stateDuration``) never
fires. Any reading in another state resolves it.
"""

from __future__ import annotations

from typing import Any

from rules.alarm import AlarmState
from rules.kinds.base import Ledger, device_fp, render, subject_of
from rules.model import StateDurationRule
from sensors.registry import Device


class DurationCheck:
    __slots__ = ("_for_ms", "_fp", "_rule", "_since", "_subject", "key", "metric", "wants_tick")

    def __init__(self, rule: StateDurationRule, device: Device) -> None:
        self._rule = rule
        self._subject = subject_of(device)
        self._fp = device_fp(rule.name, device.device)
        self._for_ms = int(rule.for_s * 1000)
        self._since: int | None = None
        self.key = f"{rule.name}|{device.device}"
        self.metric = rule.metric
        self.wants_tick = False

    @classmethod
    def build(cls, rule: StateDurationRule, device: Device) -> DurationCheck:
        return cls(rule, device)

    def on_reading(self, value: float | bool, ts: int, book: Ledger) -> None:
        equals = self._rule.equals
        # A boolean state never equals a number (True == 1.0 in Python, not on a fire door).
        if isinstance(value, bool) == isinstance(equals, bool) and value == equals:
            if self._since is None:
                self._since = ts
            self.on_tick(ts, book)
        elif self._since is not None or self._fp in book.active:
            self._since = None
            self.wants_tick = False
            book.resolve(self._fp, ts)

    def on_tick(self, now: int, book: Ledger) -> None:
        if self._since is None:
            return
        firing = now - self._since >= self._for_ms
        cur = book.get(self._fp)
        if cur is None or (firing and cur.state is AlarmState.PENDING):
            rule = self._rule
            message = render(rule.message_template, self._subject, rule.name, rule.severity,
                             value=rule.equals, metric=rule.metric, for_s=rule.for_s)
            book.open(self._fp, rule=rule.name, subject=self._subject, severity=rule.severity,
                      message=message, at_ms=now, firing=firing, started_ms=self._since,
                      value=float(rule.equals))
        self.wants_tick = not firing

    def dump(self) -> dict[str, Any] | None:
        return None if self._since is None else {"since": self._since}

    def load(self, data: dict[str, Any]) -> None:
        self._since = int(data["since"])
        self.wants_tick = True
