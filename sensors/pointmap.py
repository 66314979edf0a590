"""The point map: where each point of a fire-alarm panel is, and which GB/T 26875.3 address
reports it (device contract §8, ``PARKWATCH_UITD__POINTS``).

A CSV with exactly the header :data:`CSV_HEADER`, or YAML with a ``points:`` list of the same
keys. Like the registry, every problem is collected and reported together, each as
``file:line: point 'ID': key: message``.

Checks against the registry: ``panel`` is a registered ``fire_panel`` and its park applies; the
building must have a registered device in that park (a typo there would place a fire in the
wrong building); the tenant, when set, must be a tenant of that park in the registry (it routes
notifications to the tenant). Floor and zone are free: a panel covers stairwells and rooms where
no IoT device is registered, so they are checked only as IDs.

The address columns ``uitd_address, sys_type, sys_addr, comp_addr`` are set together or not at
all (panels reporting over MQTT need none). ``uitd_address`` is the 6-byte frame source as 12 hex
digits in frame order; ``comp_addr`` the 4-byte component address as decoded little-endian. One
UITD address belongs to one panel, so :meth:`PointMap.panel_for_uitd` is unambiguous; a UITD
serving two panels would need the map keyed by (UITD, system address), which no site has yet.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sensors.errors import PointMapError
from sensors.gb26875.codes import SignalClass, signal_class
from sensors.registry import ID_PATTERN, Registry
from sensors.yamlsource import load_config_file

CSV_HEADER = ("panel", "point", "building", "floor", "zone", "tenant", "location",
              "component_type", "uitd_address", "sys_type", "sys_addr", "comp_addr")
ADDRESS_KEYS = ("uitd_address", "sys_type", "sys_addr", "comp_addr")
PANEL_KIND = "fire_panel"
_ID_KEYS = ("panel", "point", "building", "floor", "zone", "tenant")


@dataclass(frozen=True)
class PointAddress:
    """Where a point is in GB/T 26875.3 frames: the UITD and the component it reports."""

    uitd_address: bytes
    sys_type: int
    sys_addr: int
    comp_addr: int


@dataclass(frozen=True)
class MappedPoint:
    """One panel point, placed. ``park`` comes from the panel's registry entry."""

    panel: str
    point: str
    park: str
    building: str
    floor: str
    zone: str
    tenant: str | None
    location: str
    component_type: int
    address: PointAddress | None
    line: int

    @property
    def signal_class(self) -> SignalClass:
        return signal_class(self.component_type)


@dataclass(frozen=True)
class PointMap:
    """Points by panel label and by frame address. Build it with :func:`load_point_map`."""

    points: Mapping[tuple[str, str], MappedPoint]
    addresses: Mapping[PointAddress, MappedPoint]
    uitd_panels: Mapping[bytes, str]
    panel_counts: Mapping[str, int]
    source: str = ""

    def by_point(self, panel: str, point: str) -> MappedPoint | None:
        return self.points.get((panel, point))

    def by_address(self, uitd_address: bytes, sys_type: int, sys_addr: int,
                   comp_addr: int) -> MappedPoint | None:
        return self.addresses.get(PointAddress(bytes(uitd_address), sys_type, sys_addr,
                                               comp_addr))

    def panel_for_uitd(self, uitd_address: bytes) -> str | None:
        """The panel device a UITD address belongs to (None: an unknown UITD)."""
        return self.uitd_panels.get(bytes(uitd_address))

    def points_of(self, panel: str) -> int:
        """How many points ``panel`` has in the map (for per-panel caps)."""
        return self.panel_counts.get(panel, 0)

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[MappedPoint]:
        return iter(self.points.values())


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    panel: str = Field(pattern=ID_PATTERN)
    point: str = Field(pattern=ID_PATTERN)
    building: str = Field(pattern=ID_PATTERN)
    floor: str = Field(pattern=ID_PATTERN)
    zone: str = Field(pattern=ID_PATTERN)
    tenant: str | None = Field(default=None, pattern=ID_PATTERN)
    location: str = Field(default="", max_length=256)
    component_type: int = Field(ge=0, le=255)
    uitd_address: bytes | None = None
    sys_type: int | None = Field(default=None, ge=0, le=255)
    sys_addr: int | None = Field(default=None, ge=0, le=255)
    comp_addr: int | None = Field(default=None, ge=0, le=0xFFFF_FFFF)

    @field_validator("uitd_address", mode="before")
    @classmethod
    def _hex_address(cls, value: object) -> bytes | None:
        if value is None:
            return None
        # YAML reads 790300000000 as a number (and 0-led digits as octal): insist on a string.
        if not isinstance(value, str):
            raise ValueError("must be a string of 12 hex digits (quote it in YAML)")
        text = value.strip()
        if len(text) != 12 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError("must be 12 hex digits, the 6 address bytes in frame order")
        return bytes.fromhex(text)

    @model_validator(mode="after")
    def _address_complete(self) -> _Row:
        present = [getattr(self, k) is not None for k in ADDRESS_KEYS]
        if any(present) and not all(present):
            missing = [k for k, p in zip(ADDRESS_KEYS, present, strict=True) if not p]
            raise ValueError(f"{', '.join(ADDRESS_KEYS)} are set together or not at all "
                             f"(missing: {', '.join(missing)})")
        return self

    def address(self) -> PointAddress | None:
        if (self.uitd_address is None or self.sys_type is None or self.sys_addr is None
                or self.comp_addr is None):
            return None
        return PointAddress(self.uitd_address, self.sys_type, self.sys_addr, self.comp_addr)


def load_point_map(path: str | Path, registry: Registry) -> PointMap:
    """Load a ``.csv`` or ``.yaml``/``.yml`` point map; PointMapError lists every problem."""
    path = Path(path)
    if not path.is_file():
        raise PointMapError(str(path), [f"{path}: file not found"])
    errors: list[tuple[int, str]] = []
    rows = _csv_rows(path, errors) if path.suffix.lower() == ".csv" else _yaml_rows(path)
    return build_point_map(rows, registry, source=str(path), errors=errors)


@dataclass
class _Builder:
    registry: Registry
    source: str
    errors: list[tuple[int, str]]  # (line, message): reported in file order

    def __post_init__(self) -> None:
        self.buildings = {(d.park, d.building) for d in self.registry}
        self.tenants = {(d.park, d.tenant) for d in self.registry if d.tenant}
        self.points: dict[tuple[str, str], MappedPoint] = {}
        self.addresses: dict[PointAddress, MappedPoint] = {}
        self.uitd_panels: dict[bytes, MappedPoint] = {}
        self.counts: dict[str, int] = {}

    def error(self, line: int, point: object, key: str, message: str) -> None:
        self.errors.append((line, f"{self.source}:{line}: point {point!r}: {key}: {message}"))

    def add(self, line: int, row: Mapping[str, Any]) -> None:
        try:
            valid = _Row.model_validate(row)
        except ValidationError as exc:
            for err in exc.errors():
                # A model-level error is the address group rule.
                key = ".".join(str(p) for p in err["loc"]) or "address"
                value = row.get(str(err["loc"][0])) if err["loc"] else None
                shown = f" (got {value!r})" if value is not None else ""
                msg = str(err["msg"]).removeprefix("Value error, ")
                self.error(line, row.get("point", "?"), key, msg + shown)
            return
        park = self._check_registry(line, valid)
        if park is None:
            return
        point = MappedPoint(valid.panel, valid.point, park, valid.building, valid.floor,
                            valid.zone, valid.tenant, valid.location, valid.component_type,
                            valid.address(), line)
        self._index(point)

    def _check_registry(self, line: int, row: _Row) -> str | None:
        device = self.registry.get(row.panel)
        if device is None:
            self.error(line, row.point, "panel", f"{row.panel!r} is not in the registry")
            return None
        ok = True
        if device.kind != PANEL_KIND:
            self.error(line, row.point, "panel",
                       f"{row.panel!r} is a {device.kind}, not a {PANEL_KIND}")
            ok = False
        if (device.park, row.building) not in self.buildings:
            self.error(line, row.point, "building",
                       f"{row.building!r} has no device in park {device.park!r} of the registry")
            ok = False
        if row.tenant is not None and (device.park, row.tenant) not in self.tenants:
            self.error(line, row.point, "tenant",
                       f"{row.tenant!r} is not a tenant of park {device.park!r} in the registry")
            ok = False
        return device.park if ok else None

    def _index(self, point: MappedPoint) -> None:
        key = (point.panel, point.point)
        first = self.points.get(key)
        if first is not None:
            self.error(point.line, point.point, "point", f"duplicate: panel {point.panel!r} "
                       f"already has this point (first defined on line {first.line})")
            return
        address = point.address
        if address is not None:
            same = self.addresses.get(address)
            if same is not None:
                self.error(point.line, point.point, "comp_addr",
                           f"address already used by point {same.point!r} of panel "
                           f"{same.panel!r} (line {same.line})")
                return
            owner = self.uitd_panels.setdefault(address.uitd_address, point)
            if owner.panel != point.panel:
                self.error(point.line, point.point, "uitd_address",
                           f"{address.uitd_address.hex().upper()} already belongs to panel "
                           f"{owner.panel!r} (line {owner.line}); one UITD serves one panel")
                return
            self.addresses[address] = point
        self.points[key] = point
        self.counts[point.panel] = self.counts.get(point.panel, 0) + 1


def build_point_map(rows: Sequence[tuple[int, Mapping[str, Any]]], registry: Registry, *,
                    source: str, errors: list[tuple[int, str]] | None = None) -> PointMap:
    """Validate (line, row) pairs into a PointMap, collecting every error before raising;
    ``errors`` are (line, message) pairs found while reading the file."""
    builder = _Builder(registry, source, list(errors or []))
    for line, row in rows:
        builder.add(line, row)
    if builder.errors:
        raise PointMapError(source, [m for _, m in sorted(builder.errors, key=lambda e: e[0])])
    return PointMap(points=builder.points, addresses=builder.addresses,
                    uitd_panels={k: p.panel for k, p in builder.uitd_panels.items()},
                    panel_counts=builder.counts, source=source)


def _yaml_rows(path: Path) -> list[tuple[int, Mapping[str, Any]]]:
    doc, lines = load_config_file(path, PointMapError)
    if not isinstance(doc, dict) or not isinstance(doc.get("points"), list):
        raise PointMapError(str(path), [f"{path}:1: expected a mapping with a 'points:' list"])
    extra = [k for k in doc if k != "points"]
    if extra:
        raise PointMapError(str(path), [
            f"{path}:{lines.get((k,), 1)}: {k}: unknown top-level key (only 'points' is allowed)"
            for k in extra])
    rows: list[tuple[int, Mapping[str, Any]]] = []
    for index, item in enumerate(doc["points"]):
        line = lines.get(("points", index), 0)
        if not isinstance(item, dict):
            raise PointMapError(str(path), [f"{path}:{line}: each point must be a mapping"])
        # YAML turns `floor: 2` into an int; IDs are strings everywhere else.
        rows.append((line, {k: str(v) if k in _ID_KEYS and isinstance(v, int | float)
                            and not isinstance(v, bool) else v for k, v in item.items()}))
    return rows


def _csv_rows(path: Path, errors: list[tuple[int, str]]) -> list[tuple[int, Mapping[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
            raise PointMapError(str(path), [
                f"{path}:1: CSV header must be exactly: {','.join(CSV_HEADER)} (got: "
                f"{','.join(header or [])})"])
        rows: list[tuple[int, Mapping[str, Any]]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(CSV_HEADER):
                errors.append((reader.line_num, f"{path}:{reader.line_num}: expected "
                               f"{len(CSV_HEADER)} columns, got {len(row)} (a comma inside a "
                               "cell needs quotes)"))
                continue
            # Empty cells mean "not set", as in the registry, so they are left out, not "".
            rows.append((reader.line_num, {k: v.strip() for k, v in zip(CSV_HEADER, row,
                                                                       strict=True) if v.strip()}))
        return rows
