"""Device registry: YAML and CSV, every problem reported together with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensors.errors import RegistryError
from sensors.registry import CSV_HEADER, load_registry

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_YAML = ROOT / "config" / "sample-park" / "registry.yaml"
SAMPLE_CSV = ROOT / "config" / "sample-park" / "registry.csv"


def test_sample_park_loads_from_yaml_and_csv() -> None:
    yaml_reg = load_registry(SAMPLE_YAML)
    csv_reg = load_registry(SAMPLE_CSV)
    assert len(yaml_reg) >= 60
    assert {d.device for d in yaml_reg} == {d.device for d in csv_reg}
    assert yaml_reg.parks() == {"xz01"}


def test_csv_empty_cells_mean_not_set(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(",".join(CSV_HEADER) + "\n"
                    "wp-1,xz01,b3,2,east,water_pressure,,2F east riser,60\n"
                    "sm-1,xz01,b3,2,east,smoke,hs-elec,,\n")
    reg = load_registry(path)
    wp, sm = reg.get("wp-1"), reg.get("sm-1")
    assert wp is not None
    assert sm is not None
    assert wp.tenant is None
    assert wp.report_interval_s == 60
    assert sm.tenant == "hs-elec"
    assert sm.location == ""
    assert sm.report_interval_s == 300
    assert wp.tags() == {"park": "xz01", "building": "b3", "floor": "2", "zone": "east",
                         "device": "wp-1"}


def test_csv_reports_all_errors_together(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(",".join(CSV_HEADER) + "\n"
                    "wp-1,xz01,b3,2,east,water_pressure,,,60\n"      # line 2 ok
                    "wp-1,xz01,b3,2,east,water_pressure,,,60\n"      # line 3 duplicate
                    "bad id,xz01,b3,2,east,smoke,,,\n"               # line 4 bad id
                    "x-2,xz01,b3,2,east,lava_lamp,,,\n"              # line 5 unknown kind
                    "x-3,xz01,b3,2,east,smoke,,,abc\n"               # line 6 bad interval
                    "x-4,xz01,b3,2,east,smoke,,a,b,c\n")             # line 7 column count
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    problems = info.value.problems
    text = "\n".join(problems)
    assert f"{path}:3: device 'wp-1' is a duplicate (first defined on line 2)" in text
    assert f"{path}:4: device 'bad id': device" in text
    assert f"{path}:5: device 'x-2': kind" in text
    assert "unknown kind 'lava_lamp'" in text
    assert f"{path}:6: device 'x-3': report_interval_s" in text
    assert f"{path}:7: expected 9 columns" in text
    assert len(problems) == 5


def test_csv_header_must_start_with_the_contract_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("device,park,building,kind\nx,p,b,smoke\n")
    with pytest.raises(RegistryError, match="header must start with exactly: device,park,"):
        load_registry(path)


def test_csv_may_add_names_mode_supply_heat_class_and_point_count(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(",".join(CSV_HEADER) + ",zone_name,building_name,floor_name,heat_class,"
                    "supply,mode,max_points\n"
                    "hd-1,xz01,b3,2,east,heat,hs-elec,boiler room,60,东区,3号厂房,2层,C,,,\n"
                    "pm-1,xz01,b3,2,east,power_meter,,,60,,,,,three_phase_380,,\n"
                    "fd-1,xz01,b3,2,east,fire_door,,,60,,,,,,normally_closed,\n"
                    "fp-1,xz01,b3,1,ctl,fire_panel,,,30,,,,,,,500\n", encoding="utf-8")
    devices = {d.device: d for d in load_registry(path)}
    hd = devices["hd-1"]
    assert (hd.building_name, hd.floor_name, hd.zone_name) == ("3号厂房", "2层", "东区")
    assert hd.heat_class == "C"
    assert hd.limit("heat_c") == 100.0
    assert devices["pm-1"].limit("high_v") == 406.6
    assert devices["fd-1"].mode == "normally_closed"
    assert devices["fp-1"].max_points == 500


def test_csv_extra_columns_are_checked_and_cells_validated(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text(",".join(CSV_HEADER) + ",colour,zone_name,zone_name\n")
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}:1: unknown column(s) colour; after the nine")
    assert "column(s) given twice: zone_name" in problem
    path.write_text(",".join(CSV_HEADER) + ",heat_class\n"
                    "hd-1,xz01,b3,2,east,heat,,,60,Z\n")
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    assert f"{path}:2: device 'hd-1': heat_class" in "\n".join(info.value.problems)


def test_yaml_errors_have_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "devices:\n"
        "  - device: fd-1\n"                 # line 2
        "    park: xz01\n    building: b1\n    floor: 1\n    zone: a\n"
        "    kind: fire_door\n    mode: sometimes_open\n"
        "  - device: wp-1\n"                 # line 9
        "    park: xz01\n    building: b1\n    floor: 1\n    zone: a\n"
        "    kind: water_pressure\n    limits: {low_mpa: 0.15}\n    colour: red\n")
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    text = "\n".join(info.value.problems)
    assert f"{path}:2: device 'fd-1': mode" in text
    assert f"{path}:9: device 'wp-1': colour" in text


def test_missing_file() -> None:
    with pytest.raises(RegistryError, match="file not found"):
        load_registry("/nonexistent/registry.yaml")
