"""zone_coincidence: two distinct fire signals in one zone within a window → ``fire_confirmed``.

A signal is an alarm of one of the rules named in ``signals`` (e.g. the ``fire_alarm`` event
rule, ``heat_high``) that starts firing for a device in scope. Distinct means another device,
or another point of a panel. The engine feeds each call's transitions here right after the
other rules ran, so ``fire_confirmed`` comes out of the same ``observe()`` that delivered the
second signal. One signal alone gives the ``single`` alarm (``zone_pre_alarm``, major), which
``fire_confirmed`` supersedes. Both resolve when none of their signals is active any more
(e.g. the panel was reset), not on a timer: a fire does not go out because a window passed.

The zone is the device's zone (park/building/floor/zone). A panel point counts in the zone the
point map places it in (its alarm's subject, rules/placement.py; in scope as "panel:point");
an unmapped point has no honest zone and only counts where the panel itself is in scope.
"""

from __future__ import annotations

import string
from typing import Any

from rules.alarm import Alarm, AlarmState, Subject
from rules.kinds.base import Ledger, render
from rules.model import CoincidenceRule

_LIVE = (AlarmState.FIRING, AlarmState.ACKNOWLEDGED)


def is_new_signal(before: Alarm | None, after: Alarm) -> bool:
    """A transition that starts a signal: an alarm now firing that was new or pending."""
    return after.state in _LIVE and (before is None or before.state is AlarmState.PENDING)


class ZoneCoincidence:
    def __init__(self, rule: CoincidenceRule, subject: Subject, zone: str) -> None:
        self.rule = rule
        self.subject = subject                       # zone-level: no device
        self.fp = f"{rule.name}|zone:{zone}"
        self.single_fp = f"{rule.single.rule}|zone:{zone}" if rule.single else None
        self.key = self.fp
        self._window_ms = int(rule.window_s * 1000)
        self._signals: dict[str, tuple[int, str]] = {}   # "device[:point]" -> (time, alarm fp)

    def on_signal(self, alarm: Alarm, book: Ledger) -> None:
        point = alarm.labels.get("point", "")
        source = f"{alarm.subject.device}:{point}" if point else alarm.subject.device
        at = alarm.fired_at_ms if alarm.fired_at_ms is not None else alarm.updated_at_ms
        self._prune(book)
        self._signals[source] = (at, alarm.fingerprint)
        if book.get(self.fp) is not None:
            return
        close = [s for s, (t, _) in self._signals.items() if abs(t - at) <= self._window_ms]
        rule = self.rule
        names = ", ".join(sorted(self._signals))
        if len(close) >= 2:
            message = render(rule.message_template, self.subject, rule.name, rule.severity,
                             signals=names, count=len(close), window_s=rule.window_s)
            book.open(self.fp, rule=rule.name, subject=self.subject, severity=rule.severity,
                      message=message, at_ms=at, labels={"signals": names})
            if self.single_fp is not None:
                book.resolve(self.single_fp, at, "superseded by " + rule.name)
        elif rule.single is not None and self.single_fp is not None:
            message = render(string.Template(rule.single.message), self.subject,
                             rule.single.rule, rule.single.severity, signals=names,
                             count=1, window_s=rule.window_s)
            book.open(self.single_fp, rule=rule.single.rule, subject=self.subject,
                      severity=rule.single.severity, message=message, at_ms=at,
                      labels={"signals": names})

    def on_signal_gone(self, at: int, book: Ledger) -> None:
        self._prune(book)
        if not self._signals:
            book.resolve(self.fp, at, None)
            if self.single_fp is not None:
                book.resolve(self.single_fp, at, None)

    def _prune(self, book: Ledger) -> None:
        for source, (_, fp) in list(self._signals.items()):
            if fp not in book.active:
                del self._signals[source]

    def dump(self) -> dict[str, Any] | None:
        # A copy (the saved state compares it with the last dump), of tuples: JSON lists.
        return dict(self._signals) or None

    def load(self, data: dict[str, Any]) -> None:
        self._signals = {k: (int(v[0]), str(v[1])) for k, v in data.items()}
