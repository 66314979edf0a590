"""The tenant register: YAML and CSV, every problem with its line, and the registry's tenants
checked against it (issue 12, point 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.tools.cli import main
from sensors.registry import load_registry
from sensors.tenants import CSV_HEADER, TenantRegisterError, load_tenants, load_tenants_for
from tests.support.paths import ROOT

SAMPLE = ROOT / "config" / "sample-park" / "tenants.yaml"
SAMPLE_REGISTRY = ROOT / "config" / "sample-park" / "registry.yaml"


def test_sample_register_covers_every_tenant_of_the_sample_registry() -> None:
    register = load_tenants_for(SAMPLE, load_registry(SAMPLE_REGISTRY))
    assert {t.id for t in register} == {"hs-elec", "jx-textile", "lt-print"}
    hs = register.get("hs-elec")
    assert hs is not None
    assert hs.fire_safety_manager.phone == "+8613800000011"
    assert hs.fire_safety_responsible.name == "李建国"
    assert (hs.fire_hazard_class, hs.hazard_code, hs.three_in_one) == ("丙", "C", False)
    assert register.lines["jx-textile"] > register.lines["hs-elec"]


def test_csv_loads_like_yaml_with_letters_and_chinese_yes_no(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(",".join(CSV_HEADER) + "\n"
                    "hs-elec,华盛电子,李建国,+8613800000011,李明,13800000012,6400,c,否\n"
                    "jx-textile,锦绣纺织,陈志强,+8613800000021,陈丽,+8613800000022,9800,丙,是\n",
                    encoding="utf-8")
    register = load_tenants(path)
    hs, jx = register.get("hs-elec"), register.get("jx-textile")
    assert hs is not None
    assert jx is not None
    assert (hs.fire_hazard_class, hs.three_in_one) == ("丙", False)
    assert hs.fire_safety_manager.phone == "13800000012"
    assert jx.three_in_one is True
    assert register.lines == {"hs-elec": 2, "jx-textile": 3}


def test_csv_reports_every_problem_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(",".join(CSV_HEADER) + "\n"
                    "hs-elec,华盛,李,+8613800000011,李明,+8613800000012,6400,丙,no\n"   # 2 ok
                    "hs-elec,华盛,李,+8613800000011,李明,+8613800000012,6400,丙,no\n"   # 3 dup
                    "bad id,X,李,+8613800000011,李明,+8613800000012,10,丙,no\n"         # 4
                    "t-4,X,李,+8613800000011,李明,call me,10,丙,no\n"                   # 5
                    "t-5,X,李,+8613800000011,李明,+8613800000012,-3,己,maybe\n"        # 6
                    "t-6,X,李,+8613800000011,,,10,丙,no\n"                             # 7
                    "t-7,X,李\n",                                                     # 8
                    encoding="utf-8")
    with pytest.raises(TenantRegisterError) as info:
        load_tenants(path)
    text = "\n".join(info.value.problems)
    assert f"{path}:3: tenant 'hs-elec' is a duplicate (first defined on line 2)" in text
    assert f"{path}:4: tenant 'bad id': id:" in text
    assert f"{path}:5: tenant 't-4': fire_safety_manager.phone:" in text
    assert f"{path}:6: tenant 't-5': floor_area_m2:" in text
    assert f"{path}:6: tenant 't-5': fire_hazard_class: must be one of 甲 乙 丙 丁 戊" in text
    assert f"{path}:6: tenant 't-5': three_in_one:" in text
    assert f"{path}:7: tenant 't-6': fire_safety_manager: Field required" in text
    assert f"{path}:8: expected {len(CSV_HEADER)} columns, got 3" in text


def test_csv_header_must_be_exact(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,name\nhs-elec,X\n")
    with pytest.raises(TenantRegisterError, match=r":1: CSV header must be exactly: id,name,"):
        load_tenants(path)


def test_yaml_errors_name_the_line_of_the_tenant(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "tenants:\n"
        "  - id: hs-elec\n"                                                     # line 2
        "    name: 华盛\n"
        "    fire_safety_responsible: {name: 李, phone: 13800000011}\n"
        "    fire_safety_manager: {name: 李明, phone: '+8613800000012'}\n"
        "    floor_area_m2: 6400\n"
        "    fire_hazard_class: A\n"
        "    three_in_one: false\n"
        "  - id: lt-print\n"                                                    # line 9
        "    name: 蓝图\n"
        "    fire_safety_responsible: {name: 刘}\n"
        "    fire_safety_manager: {name: 刘芳, phone: '+8613800000032', fax: x}\n"
        "    floor_area_m2: 1800\n"
        "    fire_hazard_class: 乙\n", encoding="utf-8")
    with pytest.raises(TenantRegisterError) as info:
        load_tenants(path)
    problems = info.value.problems
    assert f"{path}:9: tenant 'lt-print': fire_safety_responsible.phone: Field required" \
        in problems
    assert f"{path}:9: tenant 'lt-print': fire_safety_manager.fax: unknown key" in problems
    assert f"{path}:9: tenant 'lt-print': three_in_one: Field required" in problems
    assert len(problems) == 3     # hs-elec is fine: an unquoted phone and class A are accepted


def test_yaml_top_level_must_be_a_tenants_list(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("tenants: []\nparks: {}\n")
    with pytest.raises(TenantRegisterError, match=r":2: parks: unknown top-level key"):
        load_tenants(path)
    path.write_text("- id: x\n")
    with pytest.raises(TenantRegisterError, match="expected a mapping with a 'tenants:' list"):
        load_tenants(path)
    with pytest.raises(TenantRegisterError, match="file not found"):
        load_tenants(tmp_path / "nope.yaml")


def _one_tenant_register(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        "  - {id: hs-elec, name: 华盛, floor_area_m2: 100, fire_hazard_class: 丙,"
        " three_in_one: false,\n"
        "     fire_safety_responsible: {name: 李, phone: '+8613800000011'},\n"
        "     fire_safety_manager: {name: 李明, phone: '+8613800000012'}}\n", encoding="utf-8")
    return path


def test_registry_tenant_missing_from_the_register_names_the_registry_line(
        tmp_path: Path) -> None:
    reg = tmp_path / "reg.yaml"
    reg.write_text("devices:\n"
                   "  - {device: a-1, park: p, building: b, floor: '1', zone: z, kind: smoke,"
                   " tenant: hs-elec}\n"
                   "  - {device: a-2, park: p, building: b, floor: '1', zone: z, kind: smoke,"
                   " tenant: hs-elek}\n"
                   "  - {device: a-3, park: p, building: b, floor: '1', zone: z, kind: smoke}\n")
    with pytest.raises(TenantRegisterError) as info:
        load_tenants_for(_one_tenant_register(tmp_path), load_registry(reg))
    assert info.value.problems == [
        f"{reg}:3: device 'a-2': tenant: 'hs-elek' is not in the tenant register "
        f"{tmp_path / 'tenants.yaml'}"]


def test_check_config_reports_register_and_registry_problems(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "reg.yaml"
    reg.write_text("devices:\n"
                   "  - {device: a-1, park: p, building: b, floor: '1', zone: z, kind: smoke,"
                   " tenant: lt-print}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"registry: {reg}\ntenants: {_one_tenant_register(tmp_path)}\n")
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{reg}:2: device 'a-1': tenant: 'lt-print' is not in the tenant register" in err
    # The same configuration refuses to run (load_all is what `parkwatch run` uses).
    assert main(["check-rules", "--config", str(cfg)]) == 2
    reg.write_text(reg.read_text().replace("lt-print", "hs-elec"))
    assert main(["check-config", "--config", str(cfg)]) == 0
    assert "1 tenants from" in capsys.readouterr().out


def test_check_config_names_the_environment_setting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "t.yaml"
    bad.write_text("tenants:\n  - {id: x}\n")
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("PARKWATCH_TENANTS", str(bad))
    assert main(["check-config", "--config", "config/parkwatch.example.yaml"]) == 2
    assert f"{bad}:2: tenant 'x': name: Field required" in capsys.readouterr().err
