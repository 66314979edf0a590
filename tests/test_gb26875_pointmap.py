"""The fire-panel point map: CSV and YAML, every problem with its line, and the lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensors.errors import ConfigError, PointMapError
from sensors.gb26875.adu import Adu, ComponentStatus, parse_adu
from sensors.gb26875.codes import SignalClass
from sensors.gb26875.frame import Deframer, Frame
from sensors.pointmap import CSV_HEADER, PointMap, load_point_map
from sensors.registry import Registry, load_registry
from tests.support.gb26875_vectors import VECTORS
from tests.support.paths import ROOT, SAMPLE_REGISTRY

SAMPLE_POINTS = ROOT / "config" / "sample-park" / "points.csv"
HEADER = ",".join(CSV_HEADER) + "\n"
UITD0 = bytes.fromhex("790300000000")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(SAMPLE_REGISTRY)


@pytest.fixture(scope="module")
def sample(registry: Registry) -> PointMap:
    return load_point_map(SAMPLE_POINTS, registry)


def write(tmp_path: Path, text: str, name: str = "points.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(path: Path, registry: Registry) -> list[str]:
    with pytest.raises(PointMapError) as info:
        load_point_map(path, registry)
    assert isinstance(info.value, ConfigError)
    return info.value.problems


# --- the sample park -------------------------------------------------------------------------

def test_sample_covers_the_three_panels(sample: PointMap) -> None:
    counts = {panel: sample.points_of(panel) for panel in ("fp-0001", "fp-0002", "fp-0003")}
    assert all(12 <= n <= 24 for n in counts.values()), counts
    assert len(sample) == sum(counts.values())
    assert sample.points_of("sm-0101") == 0
    for index, panel in enumerate(("fp-0001", "fp-0002", "fp-0003")):
        assert sample.panel_for_uitd(bytes.fromhex(f"79030000000{index}")) == panel
    assert sample.panel_for_uitd(bytes(6)) is None


def test_sample_has_what_later_tests_need(sample: PointMap) -> None:
    kinds = {(p.panel, p.component_type) for p in sample}
    for panel in ("fp-0001", "fp-0002", "fp-0003"):
        assert {(panel, 42), (panel, 31), (panel, 23), (panel, 24)} <= kinds
    assert {("fp-0003", c) for c in (91, 96, 97, 99)} <= kinds
    pump = [p for p in sample if p.component_type == 91]
    assert {p.zone for p in pump} == {"pump-room"}
    # Two smoke detectors of one tenant in one zone: a fire can be confirmed by coincidence.
    zones: dict[tuple[str, str, str, str | None], int] = {}
    for p in sample:
        if p.signal_class == SignalClass.FIRE and p.component_type in (40, 42):
            key = (p.building, p.floor, p.zone, p.tenant)
            zones[key] = zones.get(key, 0) + 1
    assert zones[("b1", "2", "east", "hs-elec")] >= 2
    assert {p.tenant for p in sample} == {None, "hs-elec", "jx-textile", "lt-print"}


def test_vector_1_maps_to_a_point(sample: PointMap) -> None:
    (frame,) = Deframer().feed(VECTORS[1])
    assert isinstance(frame, Frame)
    adu = parse_adu(frame.adu)
    assert isinstance(adu, Adu)
    (obj,) = adu.objects
    assert isinstance(obj, ComponentStatus)
    assert sample.panel_for_uitd(frame.source) == "fp-0001"
    point = sample.by_address(frame.source, obj.sys_type, obj.sys_addr, obj.comp_addr)
    assert point is not None
    assert (point.panel, point.point, point.park, point.tenant) == ("fp-0001", "L1-D024",
                                                                    "xz01", "hs-elec")
    assert point.component_type == obj.comp_type == 40
    assert sample.by_point("fp-0001", "L1-D024") == point
    assert sample.by_point("fp-0001", "nope") is None
    assert sample.by_address(frame.source, 1, 2, obj.comp_addr) is None


def test_contract_example_row(sample: PointMap) -> None:
    point = sample.by_point("fp-0001", "L1-D023")
    assert point is not None
    assert point.address is not None
    assert point.address.comp_addr == 65546
    assert point.address.uitd_address == UITD0
    assert "2F east SMT line" in point.location


# --- CSV rows --------------------------------------------------------------------------------

def test_address_columns_are_optional_as_a_group(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, HEADER + "fp-0001,MQ-1,b1,2,east,hs-elec,,42,,,,\n"
                 "fp-0001,MQ-2,b1,2,stair-9,,somewhere,23,790300000000,1,1,4294967295\n")
    pm = load_point_map(path, registry)
    first, second = pm.by_point("fp-0001", "MQ-1"), pm.by_point("fp-0001", "MQ-2")
    assert first is not None
    assert second is not None
    assert (first.address, first.tenant, first.location) == (None, "hs-elec", "")
    assert second.zone == "stair-9"  # zones are free: panels cover rooms with no IoT device
    assert pm.by_address(UITD0, 1, 1, 0xFFFF_FFFF) == second
    assert pm.points_of("fp-0001") == 2


def test_every_row_error_is_reported_with_its_line(tmp_path: Path, registry: Registry) -> None:
    rows = [
        "fp-0001,ok-1,b1,2,east,hs-elec,,42,790300000000,1,1,1",  # 2: fine
        "fp-9999,p2,b1,2,east,,,42,,,,",  # 3: unknown panel
        "sm-0101,p3,b1,2,east,,,42,,,,",  # 4: not a fire panel
        "fp-0001,p4,b9,2,east,,,42,,,,",  # 5: building not in the park
        "fp-0001,p5,b1,2,east,nobody,,42,,,,",  # 6: unknown tenant
        "fp-0001,bad id,b1,2,east,,,42,,,,",  # 7: point ID
        "fp-0001,p7,b1,2,east,,,256,,,,",  # 8: component type
        "fp-0001,p8,b1,2,east,,,42,7903000000,1,1,1",  # 9: short address
        "fp-0001,p9,b1,2,east,,,42,79030000000G,1,1,1",  # 10: not hex
        "fp-0001,p10,b1,2,east,,,42,790300000000,,1,1",  # 11: incomplete group
        "fp-0001,p11,b1,2,east,,,42,790300000000,256,1,4294967296",  # 12: two ranges
        "fp-0001,ok-1,b1,2,east,,,42,,,,",  # 13: duplicate point
        "fp-0001,p13,b1,2,east,,,42,790300000000,1,1,1",  # 14: duplicate address
        "fp-0002,p14,b2,2,east,,,42,790300000000,1,1,2",  # 15: UITD of another panel
        "fp-0001,p15,b1,2",  # 16: columns
        "fp-0001,p16,b1,2,east,,,smoke,,,,",  # 17: not an integer
    ]
    found = problems(write(tmp_path, HEADER + "\n".join(rows) + "\n"), registry)
    src = str(tmp_path / "points.csv")
    expected = [
        (3, "point 'p2': panel: 'fp-9999' is not in the registry"),
        (4, "point 'p3': panel: 'sm-0101' is a smoke, not a fire_panel"),
        (5, "point 'p4': building: 'b9' has no device in park 'xz01'"),
        (6, "point 'p5': tenant: 'nobody' is not a tenant of park 'xz01'"),
        (7, "point 'bad id': point: String should match pattern"),
        (8, "point 'p7': component_type: Input should be less than or equal to 255"),
        (9, "point 'p8': uitd_address: must be 12 hex digits"),
        (10, "point 'p9': uitd_address: must be 12 hex digits"),
        (11, "point 'p10': address: uitd_address, sys_type, sys_addr, comp_addr are set "
             "together or not at all (missing: sys_type)"),
        (12, "point 'p11': sys_type: Input should be less than or equal to 255"),
        (12, "point 'p11': comp_addr: Input should be less than or equal to 4294967295"),
        (13, "point 'ok-1': point: duplicate: panel 'fp-0001' already has this point (first "
             "defined on line 2)"),
        (14, "point 'p13': comp_addr: address already used by point 'ok-1' of panel 'fp-0001' "
             "(line 2)"),
        (15, "point 'p14': uitd_address: 790300000000 already belongs to panel 'fp-0001' "
             "(line 2); one UITD serves one panel"),
        (16, "expected 12 columns, got 4"),
        (17, "point 'p16': component_type: Input should be a valid integer"),
    ]
    assert len(found) == len(expected), "\n".join(found)
    for (line, text), problem in zip(expected, found, strict=True):
        assert problem.startswith(f"{src}:{line}: "), problem
        assert text in problem, problem


def test_header_must_be_exact(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, "panel,point,building\nfp-0001,x,b1\n")
    (problem,) = problems(path, registry)
    assert problem.startswith(f"{path}:1: CSV header must be exactly: panel,point,")


def test_missing_file(tmp_path: Path, registry: Registry) -> None:
    assert problems(tmp_path / "none.csv", registry) == [f"{tmp_path / 'none.csv'}: file not found"]


# --- YAML ------------------------------------------------------------------------------------

def test_yaml_form(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, (
        "points:\n"
        "  - {panel: fp-0003, point: P-1, building: b3, floor: 1, zone: pump-room,\n"
        "     location: 泵房1号消防泵, component_type: 91, uitd_address: '790300000002',\n"
        "     sys_type: 1, sys_addr: 1, comp_addr: 65538}\n"
        "  - panel: fp-0003\n"
        "    point: P-2\n"
        "    building: b3\n"
        "    floor: 3\n"
        "    zone: east\n"
        "    tenant: lt-print\n"
        "    component_type: 42\n"), "points.yaml")
    pm = load_point_map(path, registry)
    pump = pm.by_address(bytes.fromhex("790300000002"), 1, 1, 65538)
    assert pump is not None
    assert (pump.point, pump.floor, pump.signal_class) == ("P-1", "1", SignalClass.SUPERVISORY)
    assert pump.line == 2
    second = pm.by_point("fp-0003", "P-2")
    assert second is not None
    assert (second.line, second.address, second.tenant) == (5, None, "lt-print")


def test_yaml_errors(tmp_path: Path, registry: Registry) -> None:
    path = write(tmp_path, (
        "points:\n"
        "  - {panel: fp-0003, point: P-1, building: b3, floor: 1, zone: x, component_type: 91,\n"
        "     uitd_address: 790300000002, sys_type: 1, sys_addr: 1, comp_addr: 1}\n"
        "  - {panel: fp-0003, point: P-2, building: b3, floor: 1, zone: x, component_type: 9,\n"
        "     colour: red}\n"), "points.yml")
    found = problems(path, registry)
    assert found == [
        f"{path}:2: point 'P-1': uitd_address: must be a string of 12 hex digits (quote it in "
        "YAML) (got 790300000002)",
        f"{path}:4: point 'P-2': colour: Extra inputs are not permitted (got 'red')",
    ]
    top = write(tmp_path, "points: []\nparks: {}\n", "top.yaml")
    assert problems(top, registry) == [
        f"{top}:2: parks: unknown top-level key (only 'points' is allowed)"]
    not_list = write(tmp_path, "points: 3\n", "bad.yaml")
    assert problems(not_list, registry) == [
        f"{not_list}:1: expected a mapping with a 'points:' list"]
