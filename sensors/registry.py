"""The device registry: which devices exist, where they are, and what kind they are
(docs/configuration.md, "Device registry").

Loaded from YAML (``devices:`` list) or from a CSV export with the exact header of
docs/configuration.md. Every problem in the file — bad IDs, unknown kinds, duplicates, missing
columns — is collected and reported together, each with its line, so a park office fixes the
spreadsheet in one pass.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sensors.catalogue import KIND_BY_NAME
from sensors.errors import RegistryError
from sensors.yamlsource import load_config_file

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ID_RE = re.compile(ID_PATTERN)

CSV_HEADER = ("device", "park", "building", "floor", "zone", "kind", "tenant", "location",
              "report_interval_s")

#: Columns a CSV may add after :data:`CSV_HEADER`, in any order: what a spreadsheet can say that
#: the contract's nine columns cannot (display names, a door's mode, a meter's supply, a heat
#: detector's class, a panel's point count). The contract's header stays the required start, so
#: a park office's existing export keeps loading.
CSV_OPTIONAL = ("building_name", "floor_name", "zone_name", "mode", "supply", "heat_class",
                "max_points")

DOOR_MODES = ("normally_open", "normally_closed")


def is_valid_id(value: str) -> bool:
    return _ID_RE.fullmatch(value) is not None


class Device(BaseModel):
    """One registered device. Immutable: the registry is reloaded, never edited in place."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str = Field(pattern=ID_PATTERN)
    park: str = Field(pattern=ID_PATTERN)
    building: str = Field(pattern=ID_PATTERN)
    floor: str = Field(pattern=ID_PATTERN)
    zone: str = Field(pattern=ID_PATTERN)
    kind: str
    tenant: str | None = Field(default=None, pattern=ID_PATTERN)
    location: str = Field(default="", max_length=256)
    report_interval_s: float = Field(default=300.0, gt=0, le=7 * 86400)
    limits: Mapping[str, float] = Field(default_factory=dict)
    mode: str | None = None
    #: Points this device may have in alarm at once per event rule (a panel: its point count);
    #: None means the engine's default (rules/kinds/flood.py). Beyond it, one
    #: ``too_many_points`` alarm instead of one alarm per point.
    max_points: int | None = Field(default=None, ge=1, le=10_000)
    # Display names for people (issue 14): messages say "1号厂房 2层 东区", not "b1栋 2层 east区".
    # IDs stay the keys everywhere else (tags, topics, routing); empty means "show the ID".
    building_name: str = Field(default="", max_length=64)
    floor_name: str = Field(default="", max_length=32)
    zone_name: str = Field(default="", max_length=64)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KIND_BY_NAME:
            known = ", ".join(sorted(KIND_BY_NAME))
            raise ValueError(f"unknown kind {value!r}; known kinds: {known}")
        return value

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str | None) -> str | None:
        if value is not None and value not in DOOR_MODES:
            raise ValueError(f"mode must be one of {', '.join(DOOR_MODES)}")
        return value

    # ---- issue 14 (thresholds): what a device's kind alone does not say. Each gives the
    # rule pack's default for some `limits` names (SUPPLY_LIMITS, HEAT_CLASS_LIMITS below);
    # an explicit `limits` entry still wins, so a site can always say better.
    #: The supply a power meter measures (GB/T 12325-2008). A three-phase meter here reports
    #: the line-to-line voltage; one reporting line to neutral keeps single-phase limits.
    supply: Literal["single_phase_220", "three_phase_380"] | None = None
    #: A heat detector's class (GB 4716 / GB 50116-2013 表5.2.5): its static response
    #: temperature becomes the limit, so a boiler room can carry a class C detector.
    heat_class: Literal["A1", "A2", "B", "C", "D", "E", "F", "G"] | None = None

    def limit(self, name: str) -> float | None:
        """The device's value for a rule's ``limit`` name: explicit, else from supply/class."""
        if name in self.limits:
            return self.limits[name]
        derived = {**SUPPLY_LIMITS.get(self.supply or "", {}),
                   **HEAT_CLASS_LIMITS.get(self.heat_class or "", {})}
        return derived.get(name)

    def tags(self) -> dict[str, str]:
        """The InfluxDB identity tags (docs/device-protocol.md; tenant only when set)."""
        tags = {"park": self.park, "building": self.building, "floor": self.floor,
                "zone": self.zone, "device": self.device}
        if self.tenant:
            tags["tenant"] = self.tenant
        return tags


@dataclass(frozen=True)
class Registry:
    """Devices by ID. Lookups are the hot path, so this is a plain dict."""

    devices: Mapping[str, Device]
    source: str = ""
    #: device -> its line in ``source``, so another file's check can point at the row to fix.
    lines: Mapping[str, int] = field(default_factory=dict)

    def get(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    def __len__(self) -> int:
        return len(self.devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices.values())

    def parks(self) -> set[str]:
        return {d.park for d in self.devices.values()}


def load_registry(path: str | Path) -> Registry:
    """Load a ``.yaml``/``.yml`` or ``.csv`` registry; RegistryError lists every problem."""
    path = Path(path)
    if not path.is_file():
        raise RegistryError(str(path), [f"{path}: file not found"])
    errors: list[str] = []
    rows = _csv_rows(path, errors) if path.suffix.lower() == ".csv" else _yaml_rows(path)
    return build_registry(rows, source=str(path), errors=errors)


def build_registry(rows: Sequence[tuple[int, Mapping[str, Any]]], *, source: str,
                   errors: list[str] | None = None) -> Registry:
    """Validate (line, row) pairs into a Registry, collecting every error before raising."""
    errors = list(errors or [])
    devices: dict[str, Device] = {}
    first_line: dict[str, int] = {}
    for line, row in rows:
        try:
            device = Device.model_validate(row)
        except ValidationError as exc:
            errors.extend(_format_errors(source, line, row, exc))
            continue
        if device.device in devices:
            errors.append(f"{source}:{line}: device {device.device!r} is a duplicate "
                          f"(first defined on line {first_line[device.device]})")
            continue
        devices[device.device] = device
        first_line[device.device] = line
    if errors:
        raise RegistryError(source, errors)
    return Registry(devices=devices, source=source, lines=first_line)


def _format_errors(source: str, line: int, row: Mapping[str, Any],
                   exc: ValidationError) -> Iterator[str]:
    name = row.get("device", "?")
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(row)"
        value = row.get(str(err["loc"][0])) if err["loc"] else None
        shown = f" (got {value!r})" if value is not None else ""
        msg = str(err["msg"]).removeprefix("Value error, ")
        yield f"{source}:{line}: device {name!r}: {key}: {msg}{shown}"


def _yaml_rows(path: Path) -> list[tuple[int, Mapping[str, Any]]]:
    doc, lines = load_config_file(path, RegistryError)
    if not isinstance(doc, dict) or not isinstance(doc.get("devices"), list):
        raise RegistryError(str(path), [f"{path}:1: expected a mapping with a 'devices:' list"])
    extra = [k for k in doc if k != "devices"]
    if extra:
        # Park names and time zones belong in the gateway config; never ignore a key silently.
        raise RegistryError(str(path), [
            f"{path}:{lines.get((k,), 1)}: {k}: unknown top-level key (only 'devices' is allowed;"
            " park time zones go in the gateway config's 'parks:')" for k in extra])
    rows: list[tuple[int, Mapping[str, Any]]] = []
    for index, item in enumerate(doc["devices"]):
        line = lines.get(("devices", index), 0)
        if not isinstance(item, dict):
            raise RegistryError(str(path), [f"{path}:{line}: each device must be a mapping"])
        rows.append((line, _stringify_ids(item)))
    return rows


def _stringify_ids(item: Mapping[str, Any]) -> dict[str, Any]:
    # YAML turns `floor: 2` into an int; IDs are strings everywhere else (tags, topics).
    out = dict(item)
    for key in ("device", "park", "building", "floor", "zone", "tenant"):
        if isinstance(out.get(key), int | float) and not isinstance(out.get(key), bool):
            out[key] = str(out[key])
    return out


def _csv_rows(path: Path, errors: list[str]) -> list[tuple[int, Mapping[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        raw = next(reader, None)
        header = tuple(h.strip() for h in raw or [])
        extra = header[len(CSV_HEADER):]
        if header[:len(CSV_HEADER)] != CSV_HEADER:
            raise RegistryError(str(path), [
                f"{path}:1: CSV header must start with exactly: {','.join(CSV_HEADER)} (got: "
                f"{','.join(header)})"])
        wrong = [c for c in extra if c not in CSV_OPTIONAL]
        twice = sorted({c for c in extra if extra.count(c) > 1})
        if wrong or twice:
            raise RegistryError(str(path), [
                f"{path}:1: " + "; ".join(
                    ([f"unknown column(s) {', '.join(wrong)}; after the nine required ones a CSV "
                      f"may add: {', '.join(CSV_OPTIONAL)}"] if wrong else [])
                    + ([f"column(s) given twice: {', '.join(twice)}"] if twice else []))])
        rows: list[tuple[int, Mapping[str, Any]]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                errors.append(f"{path}:{reader.line_num}: expected {len(header)} columns, "
                              f"got {len(row)} (a comma inside a cell needs quotes)")
                continue
            # Empty cells mean "not set" (docs/configuration.md), so they are left out, not "".
            rows.append((reader.line_num, {k: v.strip() for k, v in zip(header, row,
                                                                       strict=True) if v.strip()}))
        return rows


# ---- issue 14 (thresholds): defaults derived from Device.supply and Device.heat_class -------

#: GB/T 12325-2008 supply deviation: 220 V single phase +7 %/-10 % (198-235.4 V); 380 V three
#: phase ±7 % (353.4-406.6 V line to line). ``lost_v`` is [PRACTICE]: about 68 % of nominal, a
#: supply on which a fire pump or fan may not start.
SUPPLY_LIMITS: Mapping[str, Mapping[str, float]] = {
    "single_phase_220": {"low_v": 198.0, "high_v": 235.4, "lost_v": 150.0},
    "three_phase_380": {"low_v": 353.4, "high_v": 406.6, "lost_v": 260.0},
}

#: GB 4716 classes: the upper static response temperature (°C) is the limit ``heat_c``
#: (GB 50116-2013 表5.2.5 chooses the class from the room's highest application temperature).
HEAT_CLASS_LIMITS: Mapping[str, Mapping[str, float]] = {
    cls: {"heat_c": temp} for cls, temp in (
        ("A1", 65.0), ("A2", 70.0), ("B", 85.0), ("C", 100.0), ("D", 115.0),
        ("E", 130.0), ("F", 145.0), ("G", 160.0))
}
