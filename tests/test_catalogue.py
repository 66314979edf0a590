"""The kind registry stays complete, matches the contract, and every kind has golden cases."""

from __future__ import annotations

import importlib
import json
import pkgutil
from pathlib import Path

import pytest

import sensors.kinds
from sensors.base import RejectReason, SensorKind, SensorValues
from sensors.catalogue import KIND_BY_NAME, KINDS, get_kind

GOLDEN = Path(__file__).parent / "golden"

#: Contract §3 table: kind → canonical metrics (None: events only).
CONTRACT: dict[str, frozenset[str] | None] = {
    "smoke": frozenset({"obscuration_pct_m", "temperature_c"}),
    "heat": frozenset({"temperature_c"}),
    "gas": frozenset({"lel_pct"}),
    "co": frozenset({"co_ppm"}),
    "water_pressure": frozenset({"pressure_mpa"}),
    "water_level": frozenset({"level_m"}),
    "electrical_fire": frozenset(
        {"residual_current_ma", "temp_l1_c", "temp_l2_c", "temp_l3_c", "temp_n_c"}
    ),
    "fire_door": frozenset({"open"}),
    "environment": frozenset({"temperature_c", "humidity_pct"}),
    "power_meter": frozenset(
        {"voltage_v", "current_a", "power_kw", "energy_kwh", "power_factor", "frequency_hz"}
    ),
    "manual_call_point": None,
    "fire_panel": None,
}

#: Every reason a decoder (as opposed to topic routing) can give.
DECODER_REASONS = frozenset(RejectReason) - {
    RejectReason.BAD_TOPIC,
    RejectReason.BAD_ID,
    RejectReason.UNKNOWN_DEVICE,
    RejectReason.TOPIC_MISMATCH,
    RejectReason.RATE_LIMITED,
    RejectReason.OTHER_PARTITION,
}

MIN_CASES_EACH = 2


def _kind_modules() -> list[str]:
    return sorted(
        info.name
        for info in pkgutil.iter_modules(sensors.kinds.__path__)
        if not info.name.startswith("_")
    )


def test_every_kind_module_is_registered() -> None:
    registered = {id(kind) for kind in KINDS}
    for name in _kind_modules():
        module = importlib.import_module(f"sensors.kinds.{name}")
        kind = getattr(module, "KIND", None)
        assert isinstance(kind, SensorKind), f"sensors/kinds/{name}.py defines no KIND"
        assert id(kind) in registered, f"sensors/kinds/{name}.py is not in catalogue.KINDS"
        assert kind.name == name, f"sensors/kinds/{name}.py names its kind {kind.name!r}"


def test_kinds_match_contract() -> None:
    assert [kind.name for kind in KINDS] == list(CONTRACT)
    for kind in KINDS:
        metrics = CONTRACT[kind.name]
        if metrics is None:
            assert kind.values_model is None
            assert not kind.has_telemetry
        else:
            assert kind.values_model is not None
            assert issubclass(kind.values_model, SensorValues)
            assert frozenset(kind.values_model.model_fields) == metrics
        assert kind.description


def test_booleans_are_declared() -> None:
    for kind in KINDS:
        if kind.values_model is None:
            continue
        for name, field in kind.values_model.model_fields.items():
            is_bool = field.annotation is bool
            assert is_bool == (name in kind.values_model.boolean_metrics), f"{kind.name}.{name}"
    fire_door = get_kind("fire_door").values_model
    assert fire_door is not None
    assert fire_door.boolean_metrics == {"open"}


def test_lookup() -> None:
    assert get_kind("water_pressure") is KIND_BY_NAME["water_pressure"]
    with pytest.raises(KeyError, match=r"unknown sensor kind 'sprinkler'.*water_pressure"):
        get_kind("sprinkler")


@pytest.mark.parametrize("kind", [kind.name for kind in KINDS])
def test_kind_has_golden_cases(kind: str) -> None:
    folder = GOLDEN / kind
    assert folder.is_dir(), f"no golden folder tests/golden/{kind}/"
    valid = [case for case in folder.iterdir() if (case / "expected.json").exists()]
    invalid = [case for case in folder.iterdir() if (case / "error.json").exists()]
    assert len(valid) >= MIN_CASES_EACH, f"{kind}: fewer than {MIN_CASES_EACH} valid cases"
    assert len(invalid) >= MIN_CASES_EACH, f"{kind}: fewer than {MIN_CASES_EACH} invalid cases"


def test_golden_folders_are_known_kinds() -> None:
    for folder in GOLDEN.iterdir():
        if folder.is_dir() and not folder.name.startswith("_"):
            assert folder.name in KIND_BY_NAME, f"tests/golden/{folder.name}/ is not a kind"


def test_every_decoder_reason_has_a_golden_case() -> None:
    seen = {
        RejectReason(json.loads(error.read_text())["reason"])
        for error in GOLDEN.glob("*/*/error.json")
        if not error.parent.parent.name.startswith("_")
    }
    assert DECODER_REASONS - seen == set()
