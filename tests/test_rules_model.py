"""Rule schemas and the loader: every mistake in a rule file is reported with file, line, key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from rules.loader import load_rules, rules_from_data
from rules.model import ThresholdRule
from sensors.catalogue import KIND_BY_NAME
from sensors.errors import ConfigError
from sensors.registry import load_registry

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "config" / "rules"
SAMPLE = ROOT / "config" / "sample-park" / "registry.yaml"

GOOD = """\
rules:
  - name: gas_high
    type: threshold
    match: {kinds: [gas]}
    metric: lel_pct
    tiers:
      - {severity: major, op: ">=", value: 25, source: "GB/T 50493-2019 5.5.2"}
    clear: {op: "<", value: 20}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    return info.value.problems


def test_default_pack_loads_with_unique_names() -> None:
    rules = load_rules(PACK)
    names = rules.names()
    assert len(names) == len(set(names))
    assert {r.type for r in rules.rules} == {"threshold", "rate_of_change", "device_silent",
                                             "event", "zone_coincidence", "plausibility",
                                             "state_duration"}


def test_every_sample_device_is_covered_and_every_telemetry_kind_has_a_value_rule() -> None:
    rules = load_rules(PACK)
    registry = load_registry(SAMPLE)
    for device in registry:
        assert any(r.match.applies(device) for r in rules.rules), device.device
    for kind in {d.kind for d in registry}:
        if KIND_BY_NAME[kind].values_model is None:
            continue
        assert any(getattr(r, "metric", None) and (r.match.kinds is None or kind in r.match.kinds)
                   for r in rules.rules), f"no value rule for {kind}"


def test_every_default_threshold_names_its_source() -> None:
    for rule in load_rules(PACK).rules:
        if isinstance(rule, ThresholdRule):
            assert all(len(t.source) > 10 for t in rule.tiers), rule.name
        else:
            assert len(getattr(rule, "source", "x" * 11)) > 10, rule.name


def test_rules_are_frozen() -> None:
    rule = load_rules(PACK).get("gas_lel_high")
    assert isinstance(rule, ThresholdRule)
    with pytest.raises(ValidationError):
        rule.metric = "co_ppm"


def test_good_file_loads(tmp_path: Path) -> None:
    rules = load_rules(write(tmp_path, "a.yaml", GOOD))
    assert rules.names() == ["gas_high"]
    assert rules.origin["gas_high"].endswith("a.yaml:2")


@pytest.mark.parametrize(("change", "needle"), [
    (("value: 25, source", "value: 25, sauce"), "tiers.0.source: Field required"),
    (("op: \">=\"", "op: \"=~\""), "tiers.0.op"),
    (("kinds: [gas]", "kinds: [gaz]"), "unknown kind(s) ['gaz']"),
    (("metric: lel_pct", "metric: co_ppm"), "metric 'co_ppm' is not reported by kinds ['gas']"),
    (("type: threshold", "type: thresh"), "does not match any of the expected tags"),
    (("clear: {op: \"<\", value: 20}", "clear: {op: \"<\", value: 30}"), "clear overlaps"),
    (("clear: {op: \"<\", value: 20}", "clear: {op: \">\", value: 20}"),
     "clear must point the other way"),
    (("name: gas_high", "name: Gas-High"), "name: String should match pattern"),
    (("metric: lel_pct", "metric: lel_pct\n    message: \"$value at $where\""),
     "unknown placeholder(s) ['where']"),
    (("metric: lel_pct", "metric: lel_pct\n    colour: red"), "colour: Extra inputs"),
])
def test_mistakes_are_reported_with_file_line_and_key(tmp_path: Path, change: tuple[str, str],
                                                      needle: str) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    found = problems(write(tmp_path, "bad.yaml", text))
    assert all(f"{tmp_path / 'bad.yaml'}:" in p and "rule '" in p for p in found), found
    assert any(needle in p for p in found), found


def test_error_line_points_at_the_key(tmp_path: Path) -> None:
    found = problems(write(tmp_path, "bad.yaml", GOOD.replace("value: 25, source", "value: 25, s")))
    assert found[0].startswith(f"{tmp_path / 'bad.yaml'}:7:")


def test_every_problem_in_every_file_is_collected(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", GOOD.replace("kinds: [gas]", "kinds: [gaz]") + "extra: 1\n")
    write(tmp_path, "c.yaml", GOOD)   # duplicate name
    found = problems(tmp_path)
    assert any("unknown kind" in p for p in found)
    assert any("extra: unknown top-level key" in p for p in found)
    assert any("'gas_high' is a duplicate (first defined at" in p and "a.yaml:2" in p
               for p in found)


def test_sub_rule_names_share_the_namespace() -> None:
    with pytest.raises(ConfigError, match="'building_silent' is a duplicate"):
        rules_from_data([
            {"name": "building_silent", "type": "event", "events": ["fault"], "severity": "minor"},
            {"name": "offline", "type": "device_silent", "factor": 3, "severity": "minor",
             "source": "practice", "building": {"rule": "building_silent"}},
        ], source="inline")


def test_coincidence_signals_must_exist() -> None:
    with pytest.raises(ConfigError, match=r"signals: unknown rule\(s\) \['nope'\]"):
        rules_from_data([{"name": "fire_confirmed", "type": "zone_coincidence",
                          "signals": ["nope"], "window_s": 60, "source": "practice"}],
                        source="inline")


def test_operator_actions_stay_info() -> None:
    with pytest.raises(ConfigError, match="severity must be info"):
        rules_from_data([{"name": "tests", "type": "event", "events": ["test"],
                          "severity": "critical"}], source="inline")


def test_tiers_must_grow_more_extreme_with_severity() -> None:
    with pytest.raises(ConfigError, match="more extreme threshold"):
        rules_from_data([{"name": "gas", "type": "threshold", "metric": "lel_pct",
                          "match": {"kinds": ["gas"]}, "tiers": [
                              {"severity": "major", "op": ">=", "value": 50, "source": "x" * 5},
                              {"severity": "critical", "op": ">=", "value": 25,
                               "source": "x" * 5}]}],
                        source="inline")


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    assert "no such file" in problems(tmp_path / "nope.yaml")[0]
    assert "no rule files" in problems(tmp_path)[0]
    assert "expected a mapping with a 'rules:' list" in problems(write(tmp_path, "x.yaml", "[]"))[0]


def test_event_escalation_must_raise_a_lasting_alarm() -> None:
    base: dict[str, object] = {"name": "iso", "type": "event", "events": ["isolated"],
                               "severity": "warning", "resolve_on": ["restored"]}
    esc = {"after_s": 86400, "severity": "major", "source": "issue 14"}
    ok = {**base, "escalate": esc}
    assert rules_from_data([ok], source="t").rules[0]
    for bad in ({**ok, "escalate": {**esc, "severity": "warning"}},
                {**ok, "auto_resolve": True, "resolve_on": []}):
        with pytest.raises(ConfigError):
            rules_from_data([bad], source="t")


def test_test_and_mute_stay_info_but_isolation_may_warn() -> None:
    for event in ("test", "mute"):
        with pytest.raises(ConfigError):
            rules_from_data([{"name": "x", "type": "event", "events": [event],
                              "severity": "warning"}], source="t")


def test_not_kinds_leaves_a_kind_out_and_is_checked() -> None:
    silent = {"name": "quiet", "type": "device_silent", "factor": 3, "severity": "minor",
              "source": "t-source"}
    with pytest.raises(ConfigError):
        rules_from_data([{**silent, "match": {"not_kinds": ["no_such_kind"]}}], source="t")
    rule = rules_from_data([{**silent, "match": {"not_kinds": ["fire_panel"]}}],
                           source="t").rules[0]
    sample = load_registry(Path(__file__).resolve().parent.parent
                           / "config" / "sample-park" / "registry.yaml")
    assert not rule.match.applies(sample.devices["fp-0001"])
    assert rule.match.applies(sample.devices["sm-0101"])
