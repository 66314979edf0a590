"""Dry runs: replay recorded observations through a fresh engine with a fake clock.

Used by ``parkwatch check-rules``: it shows which alarms a rule pack would have raised on real
traffic, before the pack goes live. The only clock is the recording's own ``t_ms``.

Recording format, one JSON object per line (blank lines and ``#`` comments are skipped)::

    {"t_ms": 1764059400000, "device": "wp-0017", "values": {"pressure_mpa": 0.32}}
    {"t_ms": 1764059401000, "device": "fp-0001", "event": "fire_alarm", "point": "1-02-034"}
    {"t_ms": 1764059402000, "device": "sm-0101", "status": "offline"}

``t_ms`` is when the gateway received it; an optional ``ts_ms`` is the device time (default
``t_ms``); events may carry ``point`` and ``detail``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from rules.alarm import Transition
from rules.engine import Engine
from rules.model import RuleSet
from rules.observation import DeviceEvent, Observation, Reading, StatusChange
from sensors.base import EventType
from sensors.registry import Registry


def dry_run(rules: RuleSet, registry: Registry, observations: Iterable[tuple[int, Observation]],
            tick_every_s: float = 1.0) -> list[Transition]:
    """Every transition the rules produce on ``observations`` (sorted by time first)."""
    ordered = sorted(observations, key=lambda pair: pair[0])
    if not ordered:
        return []
    ids = itertools.count(1)
    engine = Engine(rules=rules, registry=registry, new_id=lambda: f"dry-{next(ids)}")
    step = max(1, int(tick_every_s * 1000))
    out: list[Transition] = []
    next_tick = ordered[0][0]
    for t_ms, obs in ordered:
        while next_tick <= t_ms:   # the clock runs between messages, as in production
            out += engine.tick(next_tick)
            next_tick += step
        out += engine.observe(obs, t_ms)
    out += engine.tick(ordered[-1][0])
    return out


def read_recording(path: str | Path) -> Iterator[tuple[int, Observation]]:
    """Parse a JSON-lines recording; ValueError names the line of the first bad record."""
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                yield _parse(json.loads(text))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: bad recording line: {exc}") from exc


def _parse(rec: dict[str, Any]) -> tuple[int, Observation]:
    t_ms, device = int(rec["t_ms"]), str(rec["device"])
    ts_ms = int(rec.get("ts_ms", t_ms))
    if "values" in rec:
        if not isinstance(rec["values"], dict):
            raise TypeError("values must be an object")
        return t_ms, Reading(device=device, ts_ms=ts_ms, values=rec["values"],
                             received_at_ms=t_ms)
    if "event" in rec:
        return t_ms, DeviceEvent(device=device, ts_ms=ts_ms, type=EventType(rec["event"]),
                                 received_at_ms=t_ms, point=str(rec.get("point", "")),
                                 detail=str(rec.get("detail", "")))
    if rec.get("status") in ("online", "offline"):
        return t_ms, StatusChange(device=device, online=rec["status"] == "online",
                                  received_at_ms=t_ms)
    raise ValueError("needs one of values, event, status (online/offline)")
