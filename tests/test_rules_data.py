"""Rule tests as data (promtool ``unittest`` style): ``tests/rules/*.yaml``, one parametrized test.

Each file gives rules (inline, or ``pack: default``), devices (inline rows, or
``registry: sample``), ``input`` steps at times relative to a fixed t0, and ``expect`` blocks
checked after everything up to their ``at`` was processed. A fake clock: the harness calls
``tick(t0 + at)`` at every time that appears in the file, after that time's inputs.
See rules/README.md ("Writing a rule test").
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from rules.alarm import Alarm, Disposition, Maintenance, Transition
from rules.engine import Engine
from rules.engine_state import EngineState
from rules.loader import load_rules, rules_from_data
from rules.model import KIND_NAMES, RuleSet
from rules.observation import DeviceEvent, Observation, Reading, StatusChange
from rules.placement import place_event
from sensors.base import EventType
from sensors.pointmap import PointMap, build_point_map
from sensors.registry import Registry, build_registry, load_registry

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((ROOT / "tests" / "rules").glob("*.yaml"))
PACK = ROOT / "config" / "rules"
SAMPLE = ROOT / "config" / "sample-park" / "registry.yaml"
T0 = 1_764_000_000_000
_UNITS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
_TOP_KEYS = {"description", "rules", "pack", "devices", "registry", "points", "lateness_s", "input",
             "maintenance", "acks", "expect"}
# What each part of an ``expect`` entry may say. Anything else is a typo that would otherwise
# be ignored, and a check that silently does not run is a test that cannot fail.
_EXPECT_CHECKS = {"active", "transitions", "late_readings", "alarms_created"}
_SCOPE_KEYS = {"rule", "device", "zone", "building", "point"}
_ACTIVE_KEYS = _SCOPE_KEYS | {"state", "severity", "maintenance", "inhibited", "acknowledged_by",
                              "value", "message", "message_contains", "placed", "tenant"}
_TRANSITION_KEYS = _SCOPE_KEYS | {"from", "to", "severity"}


def ms(text: Any) -> int:
    """'90s', '2m', '1m30s', '500ms', or a number of seconds → milliseconds."""
    if isinstance(text, int | float):
        return int(text * 1000)
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text).replace(" ", ""):
        raise ValueError(f"bad duration {text!r}")
    return int(sum(float(n) * _UNITS[u] for n, u in parts))


def scope_of(entry: Mapping[str, Any]) -> str:
    if "device" in entry:
        point = entry.get("point")
        return f"device:{entry['device']}" + (f":{point}" if point else "")
    if "zone" in entry:
        return f"zone:{entry['zone']}"
    return f"building:{entry['building']}"


def rules_of(doc: Mapping[str, Any], source: str) -> RuleSet:
    if doc.get("pack") == "default":
        return load_rules(PACK)
    return rules_from_data(doc["rules"], source=source)


def registry_of(doc: Mapping[str, Any], source: str) -> Registry:
    if doc.get("registry") == "sample":
        return load_registry(SAMPLE)
    rows = [(i + 1, {"park": "p1", "floor": "1", "report_interval_s": 3600, **row})
            for i, row in enumerate(doc["devices"])]
    return build_registry(rows, source=source)


def points_of(doc: Mapping[str, Any], registry: Registry, source: str) -> PointMap | None:
    """``points:`` rows of a point map (sensors/pointmap.py), IDs as strings."""
    if "points" not in doc:
        return None
    rows = [(i + 1, {k: str(v) if k != "component_type" else v for k, v in row.items()})
            for i, row in enumerate(doc["points"])]
    return build_point_map(rows, registry, source=source)


def observation(step: Mapping[str, Any], now: int, registry: Registry | None = None,
                points: PointMap | None = None) -> Observation:
    ts = T0 + ms(step["ts"]) if "ts" in step else now
    if "values" in step:
        return Reading(device=step["device"], ts_ms=ts, values=step["values"],
                       received_at_ms=now)
    if "event" in step:
        point, detail = str(step.get("point", "")), str(step.get("detail", ""))
        device = registry.get(step["device"]) if registry is not None else None
        if points is not None and device is not None:
            # As the gateway does for a panel event (gateway/ingest/validate.py).
            placed = place_event(points, device, EventType(step["event"]), point, detail)
            return DeviceEvent(device=step["device"], ts_ms=ts, type=placed.type,
                               received_at_ms=now, point=point, detail=placed.detail,
                               place=placed.place)
        return DeviceEvent(device=step["device"], ts_ms=ts, type=EventType(step["event"]),
                           received_at_ms=now, point=point, detail=detail)
    return StatusChange(device=step["device"], online=step["status"] == "online",
                        received_at_ms=now)


class Run:
    """Replays one case; keeps every transition with the time it happened."""

    def __init__(self, doc: Mapping[str, Any], source: str) -> None:
        self.rules = rules_of(doc, source)
        self.registry = registry_of(doc, source)
        self.points = points_of(doc, self.registry, source)
        self.lateness_s = float(doc.get("lateness_s", 60))
        ids = itertools.count(1)
        self.new_id = lambda: f"a{next(ids)}"
        self.engine = self._engine(None)
        self.transitions: list[tuple[int, Transition]] = []

    def _engine(self, restored: EngineState | None) -> Engine:
        return Engine(rules=self.rules, registry=self.registry, lateness_s=self.lateness_s,
                      new_id=self.new_id, restored=restored, points=self.points)

    def step(self, step: Mapping[str, Any], now: int) -> list[Transition]:
        if step.get("restart"):
            # Through JSON, as the store would persist it.
            # The alarm store gives back the active alarms the saved state names by id.
            state = self.engine.state()
            self.engine = self._engine(EngineState.from_json(
                state.to_json(), {a.alarm_id: a for a in state.alarms}))
            return []
        if step.get("tick"):
            return []
        return self.engine.observe(observation(step, now, self.registry, self.points), now)

    def find(self, entry: Mapping[str, Any]) -> Alarm:
        fp = f"{entry['rule']}|{scope_of(entry)}"
        found = [a for a in self.engine.active() if a.fingerprint == fp]
        active = [a.fingerprint for a in self.engine.active()]
        assert found, f"no active alarm {fp}; active: {active}"
        return found[0]

    def maintenance(self, m: Mapping[str, Any], now: int) -> list[Transition]:
        until = T0 + ms(m["until"]) if "until" in m else None
        return self.engine.set_maintenance(scope=m["scope"], target=m["target"],
                                           mode=Maintenance(m["mode"]), until_ms=until,
                                           by=m.get("by", "tester"), now_ms=now)

    def ack(self, a: Mapping[str, Any], now: int) -> list[Transition]:
        alarm = self.find(a)
        return [self.engine.acknowledge(alarm.alarm_id, by=a.get("by", "duty"),
                                        disposition=Disposition(a.get("disposition", "real")),
                                        channel=a.get("channel", "test"), now_ms=now)]


def describe(a: Alarm) -> dict[str, Any]:
    return {"rule": a.rule, "scope": a.fingerprint.split("|", 1)[1], "state": a.state.value,
            "severity": a.severity.value, "maintenance": a.maintenance.value,
            "inhibited": a.inhibited_by is not None, "acknowledged_by": a.acknowledged_by,
            "value": a.value, "message": a.message, "tenant": a.subject.tenant,
            "placed": f"{a.subject.building}/{a.subject.floor}/{a.subject.zone}"}


def check_active(run: Run, expected: list[Mapping[str, Any]], where: str) -> None:
    actual = {a.fingerprint: describe(a) for a in run.engine.active()}
    want = {f"{e['rule']}|{scope_of(e)}": e for e in expected}
    assert sorted(actual) == sorted(want), f"{where}: active alarms differ:\n" \
        f"  expected {sorted(want)}\n  actual   {sorted(actual)}"
    for fp, e in want.items():
        got = actual[fp]
        for key, value in e.items():
            if key in ("rule", "device", "zone", "building", "point"):
                continue
            if key == "message_contains":
                assert value in got["message"], f"{where}: {fp} message {got['message']!r}"
            else:
                assert got[key] == value, f"{where}: {fp} {key}: expected {value!r}, " \
                                          f"got {got[key]!r} ({got})"


def check_transitions(got: list[Transition], expected: list[Mapping[str, Any]],
                      where: str) -> None:
    """The exact transitions of this step (any order); ``severity`` optional per entry."""
    actual = [(t.after.rule, t.after.fingerprint.split("|", 1)[1],
               t.before.state.value if t.before else "none", t.after.state.value,
               t.after.severity.value) for t in got]
    left = list(actual)
    unmatched = []
    for e in expected:
        want = (e["rule"], scope_of(e), e.get("from", "none"), e["to"])
        hit = next((a for a in left if a[:4] == want
                    and e.get("severity", a[4]) == a[4]), None)
        if hit is None:
            unmatched.append({**e})
        else:
            left.remove(hit)
    report = f"{where}: transitions differ:\n  expected but missing {unmatched}\n" \
             f"  unexpected {left}\n  all {actual}"
    assert not unmatched, report
    assert not left, report


def events_at(doc: Mapping[str, Any]) -> Iterator[tuple[int, str, Mapping[str, Any]]]:
    for section in ("input", "maintenance", "acks", "expect"):
        for item in doc.get(section, []) or []:
            yield ms(item["at"]), section, item


def _unknown(entry: Mapping[str, Any], known: set[str], where: str) -> list[str]:
    return [f"{where}: unknown key {key!r}" for key in sorted(set(entry) - known)]


def expect_problems(doc: Mapping[str, Any], name: str) -> list[str]:
    """Unknown keys in ``expect`` entries and in their alarms, and entries that check nothing."""
    problems = []
    for exp in doc.get("expect", []) or []:
        where = f"{name}: expect at {exp.get('at')}"
        problems += _unknown(exp, {"at"} | _EXPECT_CHECKS, where)
        if not set(exp) & _EXPECT_CHECKS:
            problems.append(f"{where}: checks nothing (give one of {sorted(_EXPECT_CHECKS)})")
        for entry in exp.get("active") or []:
            problems += _unknown(entry, _ACTIVE_KEYS, f"{where}: active {entry.get('rule')}")
        for entry in exp.get("transitions") or []:
            problems += _unknown(entry, _TRANSITION_KEYS,
                                 f"{where}: transitions {entry.get('rule')}")
    return problems


def run_case(path: Path) -> Run:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    unknown = set(doc) - _TOP_KEYS
    assert not unknown, f"{path.name}: unknown top-level keys {sorted(unknown)}"
    problems = expect_problems(doc, path.name)
    assert not problems, "\n".join(problems)
    run = Run(doc, str(path))
    order = {"input": 0, "maintenance": 1, "acks": 2, "expect": 4}
    items = sorted(events_at(doc), key=lambda e: (e[0], order[e[1]]))
    for at, group in itertools.groupby(items, key=lambda e: e[0]):
        now = T0 + at
        got: list[Transition] = []
        checks: list[Mapping[str, Any]] = []
        for _, section, item in group:
            if section == "input":
                got += run.step(item, now)
            elif section == "maintenance":
                got += run.maintenance(item, now)
            elif section == "acks":
                got += run.ack(item, now)
            else:
                checks.append(item)
        got += run.engine.tick(now)
        run.transitions += [(at, t) for t in got]
        for exp in checks:
            where = f"{path.name} at {exp['at']}"
            if "active" in exp:
                check_active(run, exp["active"] or [], where)
            if "transitions" in exp:
                check_transitions(got, exp["transitions"] or [], where)
            if "late_readings" in exp:
                assert run.engine.late_readings == exp["late_readings"], where
            if "alarms_created" in exp:
                created = sum(1 for _, t in run.transitions if t.before is None)
                assert created == exp["alarms_created"], f"{where}: {created} alarms created"
    return run


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_rule_case(path: Path) -> None:
    run_case(path)


_GAS_CASE = """\
pack: default
devices:
  - {device: gs-1, building: b1, zone: kitchen, kind: gas}
input:
  - {at: 0s, device: gs-1, values: {lel_pct: 55}}
expect:
  - at: 0s
    active: [{rule: gas_lel_high, device: gs-1, state: firing, severity: critical}]
    transitions: [{rule: gas_lel_high, device: gs-1, to: firing, severity: critical}]
"""


def test_the_harness_runs_a_correct_case(tmp_path: Path) -> None:
    # The typo cases below start from this one, so their failure is the typo's.
    case = tmp_path / "gas.yaml"
    case.write_text(_GAS_CASE, encoding="utf-8")
    assert [t.after.state.value for _, t in run_case(case).transitions] == ["firing"]


@pytest.mark.parametrize(("good", "typo", "key"), [
    ("    active:", "    actve:", "actve"),
    ("    transitions:", "    transition:", "transition"),
    ("state: firing, severity: critical}]\n    transitions",
     "state: firing, sevrity: critical}]\n    transitions", "sevrity"),
    ("to: firing, severity", "to: firing, severty", "severty"),
], ids=["expect-check", "expect-check-plural", "active-alarm-key", "transition-key"])
def test_a_typo_in_expect_fails_naming_the_file_and_the_key(tmp_path: Path, good: str,
                                                             typo: str, key: str) -> None:
    assert good in _GAS_CASE
    case = tmp_path / "typo.yaml"
    case.write_text(_GAS_CASE.replace(good, typo, 1), encoding="utf-8")
    with pytest.raises(AssertionError, match=rf"typo\.yaml: expect at 0s.*unknown key '{key}'"):
        run_case(case)


def test_an_expect_entry_that_checks_nothing_fails(tmp_path: Path) -> None:
    case = tmp_path / "empty.yaml"
    case.write_text(_GAS_CASE.split("expect:")[0] + "expect:\n  - at: 0s\n", encoding="utf-8")
    with pytest.raises(AssertionError, match=r"empty\.yaml: expect at 0s: checks nothing"):
        run_case(case)


def _docs() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text(encoding="utf-8")) for p in CASES]


def _expected_rules(doc: Mapping[str, Any]) -> set[str]:
    names = set()
    for exp in doc.get("expect", []) or []:
        for entry in (exp.get("active") or []) + (exp.get("transitions") or []):
            names.add(entry["rule"])
    return names


def test_every_default_pack_rule_has_a_data_test() -> None:
    tested = set().union(*(_expected_rules(d) for d in _docs() if d.get("pack") == "default"))
    missing = sorted(set(load_rules(PACK).names()) - tested)
    assert not missing, f"default-pack rules without a data test expecting them: {missing}"


def test_every_rule_kind_has_a_data_test() -> None:
    kinds: set[str] = set()
    for path, doc in zip(CASES, _docs(), strict=True):
        rules = rules_of(doc, str(path))
        expected = _expected_rules(doc)
        kinds |= {r.type for r in rules.rules if {r.name, *r.sub_rules()} & expected}
    assert sorted(kinds) == sorted(KIND_NAMES)


def test_every_default_threshold_takes_a_per_device_limit() -> None:
    # Issue 14: a site must be able to set any threshold for one device (registry `limits`),
    # not only the water ones; a tier without a limit name cannot be overridden.
    missing = [f"{r.name} tier {t.severity.value}" for r in load_rules(PACK).of_type("threshold")
               for t in getattr(r, "tiers", ()) if t.limit is None]
    assert missing == []
