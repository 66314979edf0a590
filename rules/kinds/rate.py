"""rate_of_change: a drop (or rise) of at least ``delta`` within ``window_s``.

Keeps, per device, the readings of the last window (event time) that can still be its maximum
(drop) or minimum (rise): a monotonic queue, so each reading costs O(1) however many the window
holds (a 60 s window at 20 readings/s is 1,200 of them; ``max()`` over those was a tenth of
the gateway's CPU in issue 15's profile). A breach fires at once; every
further breach refreshes it; the alarm resolves once ``clear_after_s`` have passed without a
breach (checked on readings and on the clock, so a device that stops reporting after a burst
does not keep the alarm forever). A value that falls and stays low breaches only while the old
high value is still inside the window: the *level* alarm is the threshold rule's job.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from rules.kinds.base import Ledger, device_fp, render, subject_of
from rules.model import UNITS, RateRule
from sensors.registry import Device


class RateCheck:
    __slots__ = ("_clear_ms", "_drop", "_fp", "_last_breach", "_rule", "_subject", "_window",
                 "_window_ms", "key", "metric", "wants_tick")

    def __init__(self, rule: RateRule, device: Device) -> None:
        self._rule = rule
        self._subject = subject_of(device)
        self._fp = device_fp(rule.name, device.device)
        self._window_ms = int(rule.window_s * 1000)
        clear_s = rule.window_s if rule.clear_after_s is None else rule.clear_after_s
        self._clear_ms = int(clear_s * 1000)
        self._drop = rule.direction == "drop"
        # (ts, value), oldest first; values strictly falling (drop) or rising (rise), so the
        # front is the window's extreme. A reading that can never be it is never kept.
        self._window: deque[tuple[int, float]] = deque()
        self._last_breach: int | None = None
        self.key = f"{rule.name}|{device.device}"
        self.metric = rule.metric
        self.wants_tick = False

    @classmethod
    def build(cls, rule: RateRule, device: Device) -> RateCheck:
        return cls(rule, device)

    def on_reading(self, value: float, ts: int, book: Ledger) -> None:
        self._push(ts, value)
        # The engine passes a device's readings in event-time order, so this one stays.
        window, cutoff = self._window, ts - self._window_ms
        while window[0][0] < cutoff:
            window.popleft()
        extreme = window[0][1]
        change = extreme - value if self._drop else value - extreme
        if change >= self._rule.delta:   # delta > 0: a lone reading never breaches
            self._breach(ts, value, change, book)
            return
        self.on_tick(ts, book)

    def _push(self, ts: int, value: float) -> None:
        window = self._window
        if self._drop:
            while window and window[-1][1] <= value:
                window.pop()
        else:
            while window and window[-1][1] >= value:
                window.pop()
        window.append((ts, value))

    def _breach(self, ts: int, value: float, change: float, book: Ledger) -> None:
        self._last_breach = ts
        self.wants_tick = True
        rule = self._rule
        message = render(rule.message_template, self._subject, rule.name, rule.severity,
                         value=value, delta=rule.delta, change=round(change, 6),
                         window_s=rule.window_s, unit=UNITS.get(rule.metric, ""),
                         metric=rule.metric)
        book.open(self._fp, rule=rule.name, subject=self._subject, severity=rule.severity,
                  message=message, at_ms=ts, value=float(value))

    def on_tick(self, now: int, book: Ledger) -> None:
        if self._last_breach is not None and now - self._last_breach >= self._clear_ms:
            self._last_breach = None
            self.wants_tick = False
            book.resolve(self._fp, now)

    def dump(self) -> dict[str, Any] | None:
        if self._last_breach is None:
            return None   # a quiet window is not worth persisting: it refills in window_s
        # The same shape as when every reading was kept: the candidates are enough to resume.
        return {"times": [t for t, _ in self._window], "values": [v for _, v in self._window],
                "last_breach": self._last_breach}

    def load(self, data: dict[str, Any]) -> None:
        self._window = deque()
        for t, v in zip(data["times"], data["values"], strict=True):
            self._push(int(t), float(v))
        self._last_breach = data["last_breach"]
        self.wants_tick = self._last_breach is not None
