"""device_silent: no message for ``factor`` × the device's report interval, judged on the clock.

Silence is decided in ``tick(now)``, never on arrival. Any message (reading, event, status
``online``; late ones too: the device is talking) is a sign of life; a ``status: offline``
(the device's Last Will) is silence at once. The next message resolves.

One group per (rule, building). So that a dead building switch gives ONE alarm, not forty:
* a silent device's alarm waits (pending) while nobody else in its building has been heard
  since it fell silent — either the building is going dark, or it fires as soon as a
  neighbour speaks (or after ``wait_s`` at the latest);
* when every in-scope device of the building is silent, one parent alarm fires (fingerprint
  on the building) and every child fires inhibited (``inhibited_by`` = parent fingerprint);
* when the building comes back, the parent resolves and the children still silent get one
  more silence period of grace before they are paged individually, so a recovering building
  does not page every device that has not spoken yet.
"""

from __future__ import annotations

import string
from typing import Any

from rules.alarm import AlarmState, Subject
from rules.kinds.base import DeviceClock, Ledger, building_key, device_fp, render, subject_of
from rules.model import SilentRule
from sensors.registry import Device


class Member:
    __slots__ = ("clock", "device", "fp", "grace_until", "offline", "since", "subject",
                 "thr_ms")

    def __init__(self, rule: SilentRule, device: Device, clock: DeviceClock) -> None:
        self.device = device
        self.clock = clock
        self.subject = subject_of(device)
        self.fp = device_fp(rule.name, device.device)
        self.thr_ms = int(rule.factor * device.report_interval_s * 1000)
        self.since: int | None = None        # silence start
        self.offline = False                 # Last Will received
        self.grace_until: int | None = None


class SilentGroup:
    def __init__(self, rule: SilentRule, devices: list[Device],
                 clocks: dict[str, DeviceClock]) -> None:
        self.rule = rule
        self.members = [Member(rule, d, clocks[d.device]) for d in devices]
        first = devices[0]
        self.subject = Subject(park=first.park, building=first.building, kind="building")
        group = rule.building
        self._parent = (group is not None and len(devices) >= group.min_devices)
        self.parent_fp = f"{group.rule if group else rule.name}|building:{building_key(first)}"

    def heard(self, m: Member, rx: int, book: Ledger) -> None:
        m.offline, m.since, m.grace_until = False, None, None
        book.resolve(m.fp, rx)
        if self._parent and self.parent_fp in book.active:
            self._parent_gone(rx, book)

    def went_offline(self, m: Member, rx: int, book: Ledger, start_ms: int) -> None:
        m.offline = True
        if m.since is None:
            m.since = rx
        self.tick(rx, book, start_ms)

    def tick(self, now: int, book: Ledger, start_ms: int) -> None:
        all_silent, newest_rx = True, start_ms
        for m in self.members:
            last = m.clock.last_rx if m.clock.last_rx is not None else start_ms
            newest_rx = max(newest_rx, last)
            if m.since is None and now - last >= m.thr_ms:
                m.since = last + m.thr_ms
            all_silent = all_silent and m.since is not None
        if self._parent and all_silent:
            self._all_silent(now, book)
            return
        wait_ms = int((self.rule.building.wait_s if self.rule.building else 0) * 1000)
        for m in self.members:
            if m.since is None or (m.grace_until is not None and now < m.grace_until):
                continue
            # Fire when a neighbour spoke after this device fell silent (not the whole
            # building), or when there is no building verdict to wait for, or it waited enough.
            fire = (not self._parent or newest_rx > m.since or now - m.since >= wait_ms
                    or m.grace_until is not None)
            self._open(m, now, book, firing=fire, inhibited_by=None)

    def _all_silent(self, now: int, book: Ledger) -> None:
        group = self.rule.building
        assert group is not None
        started = max(m.since for m in self.members if m.since is not None)
        message = render(string.Template(group.message), self.subject, group.rule, group.severity,
                         count=len(self.members), factor=self.rule.factor)
        book.open(self.parent_fp, rule=group.rule, subject=self.subject,
                  severity=group.severity, message=message, at_ms=now, started_ms=started)
        for m in self.members:
            m.grace_until = None
            self._open(m, now, book, firing=True, inhibited_by=self.parent_fp)

    def _parent_gone(self, at: int, book: Ledger) -> None:
        book.resolve(self.parent_fp, at)
        for m in self.members:
            if m.since is not None:
                m.grace_until = at + m.thr_ms

    def _open(self, m: Member, now: int, book: Ledger, *, firing: bool,
              inhibited_by: str | None) -> None:
        rule = self.rule
        assert m.since is not None
        cur = book.get(m.fp)
        if cur is not None and cur.inhibited_by == inhibited_by and (
                not firing or cur.state is not AlarmState.PENDING):
            return   # nothing would change: skip rendering on every tick
        message = render(rule.message_template, m.subject, rule.name, rule.severity,
                         silent_s=round((now - (m.clock.last_rx or m.since)) / 1000),
                         interval_s=m.device.report_interval_s, factor=rule.factor)
        book.open(m.fp, rule=rule.name, subject=m.subject, severity=rule.severity,
                  message=message, at_ms=now, firing=firing, started_ms=m.since,
                  inhibited_by=inhibited_by)

    def dump(self) -> dict[str, Any]:
        return {m.device.device: [m.since, m.offline, m.grace_until] for m in self.members
                if m.since is not None or m.offline}

    def load(self, data: dict[str, Any]) -> None:
        for m in self.members:
            if m.device.device in data:
                m.since, m.offline, m.grace_until = data[m.device.device]

