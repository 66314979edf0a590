"""The generated Grafana dashboards: committed JSON is what the code generates, the JSON is a
valid SDK model, and a few promises hold for every panel (targets, annotations, datasource,
thresholds from the rules)."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard

from gateway.grafana import export
from gateway.grafana.dashboards import build_all, influxql, schema
from gateway.grafana.dashboards.common import DATASOURCE_UID, _plain
from rules.alarm import Disposition
from tests.support.paths import ROOT

COMMITTED = ROOT / "deploy" / "grafana" / "dashboards"


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return build_all()


def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in doc.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_committed_json_is_what_the_generator_writes(lang: str) -> None:
    committed = ROOT / export.OUT_BY_LANG[lang]
    files = export.rendered(lang=lang)
    stale = export.stale(committed, files)
    assert stale == [], f"run: parkwatch grafana export --lang {lang}"
    extra = {p.name for p in committed.glob("*.json")} - set(files)
    assert extra == set(), "dashboards nobody generates any more"


def _texts(doc: Any) -> list[str]:
    """What a person reads: titles, labels, value texts, legends, column names."""
    out: list[str] = []
    if isinstance(doc, list):
        for item in doc:
            out += _texts(item)
    elif isinstance(doc, dict):
        for key, value in doc.items():
            if key in ("title", "label", "text", "alias") and isinstance(value, str):
                out.append(value)
            elif key == "renameByName" and isinstance(value, dict):
                out += list(value.values())
            else:
                out += _texts(value)
    return out


def test_zh_cn_dashboards_speak_chinese() -> None:
    zh = build_all(lang="zh-CN")
    en = build_all()
    assert set(zh) == set(en)
    # Only what people read changes: queries, UIDs and panel layout are the English set's.
    for stem in en:
        assert zh[stem]["uid"] == en[stem]["uid"]
        assert len(_panels(zh[stem])) == len(_panels(en[stem]))
    allowed = {"ParkWatch", "InfluxDB", "P50", "P90", "L1", "L2", "L3", "N"}
    for stem, doc in zh.items():
        for text in _texts(doc):
            if text.startswith("$") or text == "parkwatch-influxdb":
                continue   # a tag's value from the data, a datasource's name
            words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)) - allowed
            assert not words, (stem, text)
    texts = {t for doc in zh.values() for t in _texts(doc)}
    assert {"火警", "报警", "故障", "属实", "已响应", "感烟探测器 · 减光率"} <= texts
    assert not any("obscuration_pct_m" in t for t in texts)


def test_output_is_deterministic() -> None:
    assert export.rendered() == export.rendered()
    text = next(iter(export.rendered().values()))
    assert text.endswith("}\n")
    assert text.splitlines()[1].startswith('  "')   # two-space indent


def test_check_lists_the_files_that_differ(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    assert export.run(parser.parse_args(["--out", str(tmp_path)])) == 0
    assert export.run(parser.parse_args(["--out", str(tmp_path), "--check"])) == 0
    (tmp_path / "alarms.json").write_text("{}\n")
    (tmp_path / "water-systems.json").unlink()
    capsys.readouterr()
    assert export.run(parser.parse_args(["--out", str(tmp_path), "--check"])) == 1
    err = capsys.readouterr().err
    assert "alarms.json" in err
    assert "water-systems.json" in err
    assert "park-overview.json" not in err


def _without_annotation_targets(doc: dict[str, Any]) -> dict[str, Any]:
    copy: dict[str, Any] = json.loads(json.dumps(doc))
    for annotation in copy["annotations"]["list"]:
        annotation.pop("target", None)
    return copy


def test_each_dashboard_round_trips_through_the_sdk_model(
        dashboards: dict[str, dict[str, Any]]) -> None:
    influxql.register()
    for stem, doc in dashboards.items():
        model = Dashboard.from_json(doc)
        again: dict[str, Any] = _plain(model)
        # The SDK's AnnotationTarget models only Grafana's own annotation store; everything
        # else, InfluxQL targets included, must come back exactly.
        assert _without_annotation_targets(again) == _without_annotation_targets(doc), stem
        targets = [t for p in model.panels or [] for t in getattr(p, "targets", None) or []]
        assert targets, stem
        assert all(isinstance(t, influxql.InfluxQLQuery) for t in targets), stem


def test_uids_and_file_names_are_stable_and_unique(
        dashboards: dict[str, dict[str, Any]]) -> None:
    uids = {stem: doc["uid"] for stem, doc in dashboards.items()}
    assert uids == {"park-overview": "parkwatch-overview",
                    "building-drilldown": "parkwatch-building",
                    "water-systems": "parkwatch-water", "electrical-fire": "parkwatch-electrical",
                    "alarms": "parkwatch-alarms", "parkwatch-health": "parkwatch-health",
                    "park-scorecard": "parkwatch-scorecard"}
    for doc in dashboards.values():
        ids = [p["id"] for p in _panels(doc)]
        assert len(ids) == len(set(ids)), doc["uid"]


def test_every_panel_has_a_target_on_the_parkwatch_datasource(
        dashboards: dict[str, dict[str, Any]]) -> None:
    for doc in dashboards.values():
        variable = next(v for v in doc["templating"]["list"] if v["name"] == "datasource")
        assert variable["type"] == "datasource"
        assert variable["query"] == "influxdb"
        assert variable["current"]["value"] == DATASOURCE_UID
        for panel in _panels(doc):
            if panel["type"] == "row":
                continue
            assert panel.get("targets"), f"{doc['uid']}: {panel['title']} has no target"
            assert panel["datasource"] == {"type": "influxdb", "uid": "${datasource}"}
            for target in panel["targets"]:
                assert target["rawQuery"] is True
                assert target["query"].strip()


def test_every_time_series_panel_gets_alarm_annotations(
        dashboards: dict[str, dict[str, Any]]) -> None:
    for doc in dashboards.values():
        alarm_annotations = [a for a in doc["annotations"]["list"]
                             if a["enable"] and 'FROM "alarms"' in a["target"]["query"]
                             and "$timeFilter" in a["target"]["query"]]
        # Dashboard-wide (no panel filter): Grafana draws them on every time-series panel.
        assert alarm_annotations
        assert all("filter" not in a for a in alarm_annotations)
        series = [p for p in _panels(doc) if p["type"] in ("timeseries", "state-timeline")]
        assert all(p["datasource"] == alarm_annotations[0]["datasource"] for p in series)


def _panel(doc: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in _panels(doc) if p["title"] == title)


def _steps(panel: dict[str, Any]) -> list[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [s["value"] for s in steps if s["value"] is not None]


def test_thresholds_are_the_rules_values(dashboards: dict[str, dict[str, Any]]) -> None:
    rules = schema.rules()
    water = _panel(dashboards["water-systems"], "Pipe network pressure (hydrant and sprinkler)")
    assert _steps(water) == sorted(lim.value for lim in schema.limits(rules, "pressure_mpa"))
    assert water["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line+area"
    residual = _panel(dashboards["electrical-fire"], "Residual current per circuit")
    assert _steps(residual) == [200, 300]
    cables = _panel(dashboards["electrical-fire"], "Cable temperatures per circuit")
    assert set(_steps(cables)) == {85}


def test_changing_a_rule_moves_the_band(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(schema.DEFAULT_RULES, rules)
    water = rules / "water.yaml"
    doc = yaml.safe_load(water.read_text())
    low = next(r for r in doc["rules"] if r["name"] == "water_pressure_low")
    low["tiers"][0]["value"] = 0.15
    low["clear"]["value"] = 0.15
    water.write_text(yaml.safe_dump(doc, allow_unicode=True))
    panel = _panel(build_all(rules)["water-systems"],
                   "Pipe network pressure (hydrant and sprinkler)")
    assert 0.15 in _steps(panel)
    assert 0.10 not in _steps(panel)


def test_building_variables_chain_from_park_down(dashboards: dict[str, dict[str, Any]]) -> None:
    variables = {v["name"]: v for v in dashboards["building-drilldown"]["templating"]["list"]}
    assert [n for n in variables if n != "datasource"] == [*schema.LOCATION_TAGS, "tenant"]
    assert variables["park"]["query"] == 'SHOW TAG VALUES WITH KEY = "park"'
    assert variables["device"]["query"].endswith(
        'WHERE "park" =~ /^$park$/ AND "building" =~ /^$building$/ AND "floor" =~ /^$floor$/ '
        'AND "zone" =~ /^$zone$/')


def _transformation(panel: dict[str, Any], kind: str) -> dict[str, Any]:
    options: dict[str, Any] = next(t["options"] for t in panel["transformations"]
                                   if t["id"] == kind)
    return options


def test_active_alarms_show_since_when_and_who_acknowledged(
        dashboards: dict[str, dict[str, Any]]) -> None:
    table = _panel(dashboards["park-overview"], "Active alarms")
    query = table["targets"][0]["query"]
    assert '"started_at_ms"' in query
    assert '"acknowledged_by"' in query
    # The alarm's start, not its last point, is what "since" shows.
    conversions = _transformation(table, "convertFieldType")["conversions"]
    assert conversions == [{"targetField": "started_at_ms", "destinationType": "time"}]
    renamed = _transformation(table, "organize")["renameByName"]
    assert renamed["started_at_ms"] == "since"
    assert renamed["acknowledged_by"] == "acknowledged by"


def test_every_disposition_has_a_label(dashboards: dict[str, dict[str, Any]]) -> None:
    alarms = dashboards["alarms"]
    for title in ("Dispositions", "Acknowledgements"):
        override = next(o for o in _panel(alarms, title)["fieldConfig"]["overrides"]
                        if o["matcher"]["options"] == "disposition")
        mapping = next(p["value"][0] for p in override["properties"] if p["id"] == "mappings")
        assert set(mapping["options"]) == {d.value for d in Disposition}, title


def test_liveness_panels_read_the_gateways_latest_point_per_device(
        dashboards: dict[str, dict[str, Any]]) -> None:
    overview = dashboards["park-overview"]
    for title in ("Devices online", "Never seen", "Health per kind", "Building status"):
        query = _panel(overview, title)["targets"][0]["query"]
        # The latest point of every registered device (snapshots every minute), tenant-filtered.
        assert 'FROM "device_status" WHERE time > now() - 5m' in query, title
        assert '"device")' in query, title      # GROUP BY ..., "device" inside
        assert '"tenant" =~ /^$tenant$/' in query, title
    assert '"never_seen" = true' in _panel(overview, "Never seen")["targets"][0]["query"]
    status = _panel(dashboards["building-drilldown"], "Device status")["targets"]
    assert 'last("source")' in status[0]["query"]
    assert "\"source\" != 'snapshot'" in status[1]["query"]


def test_a_tenant_variable_where_a_tenant_makes_sense(
        dashboards: dict[str, dict[str, Any]]) -> None:
    for stem in ("park-overview", "building-drilldown", "alarms"):
        names = [v["name"] for v in dashboards[stem]["templating"]["list"]]
        assert "tenant" in names, stem
