"""The tenant register: the enterprises of a park, who answers for their fire safety, and how
hazardous they are (docs/configuration.md, "Tenant register").

Loaded like the device registry: YAML with a ``tenants:`` list, or a CSV with exactly the header
:data:`CSV_HEADER`. Every problem in the file is collected and reported together as
``file:line: tenant 'ID': key: message``, so a park office fixes the sheet in one pass.

Fire hazard classes are those of GB 50016 (火灾危险性类别 甲 乙 丙 丁 戊). English spreadsheets
write them A-E; both are accepted and stored as the Chinese class, so reports and dashboards
show one spelling (:attr:`Tenant.hazard_code` gives the ASCII letter for tags and URLs).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sensors.errors import ConfigError
from sensors.registry import ID_PATTERN, Registry
from sensors.yamlsource import load_config_file

CSV_HEADER = ("id", "name", "responsible_name", "responsible_phone", "manager_name",
              "manager_phone", "floor_area_m2", "fire_hazard_class", "three_in_one")

#: GB 50016 classes, most hazardous first, and their usual English letters.
HAZARD_CLASSES = ("甲", "乙", "丙", "丁", "戊")
_HAZARD_BY_LETTER = dict(zip("ABCDE", HAZARD_CLASSES, strict=True))
_LETTER_BY_HAZARD = {v: k for k, v in _HAZARD_BY_LETTER.items()}

PHONE_PATTERN = r"^\+?[0-9][0-9 -]{4,23}$"
_YES = ("是", "有")
_NO = ("否", "无")


class TenantRegisterError(ConfigError):
    """The tenant register cannot be loaded, or the registry names a tenant it lacks."""


class Person(BaseModel):
    """A named person with a phone: 消防安全责任人 or 消防安全管理人."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    phone: str = Field(pattern=PHONE_PATTERN)

    @field_validator("phone", mode="before")
    @classmethod
    def _phone_text(cls, value: Any) -> Any:
        # YAML reads an unquoted 13800000011 as an int; a phone number is text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Tenant(BaseModel):
    """One enterprise of the park. Immutable: the register is reloaded, never edited."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=128)
    fire_safety_responsible: Person
    fire_safety_manager: Person
    floor_area_m2: float = Field(gt=0, le=10_000_000)
    fire_hazard_class: str
    three_in_one: bool

    @field_validator("fire_hazard_class", mode="before")
    @classmethod
    def _hazard(cls, value: Any) -> str:
        text = str(value).strip()
        text = _HAZARD_BY_LETTER.get(text.upper(), text)
        if text not in HAZARD_CLASSES:
            raise ValueError("must be one of 甲 乙 丙 丁 戊 (or A-E)")
        return text

    @field_validator("three_in_one", mode="before")
    @classmethod
    def _yes_no(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip() in _YES + _NO:
            return value.strip() in _YES
        return value

    @property
    def hazard_code(self) -> str:
        """The class as an ASCII letter A-E (甲 = A), for tags and query strings."""
        return _LETTER_BY_HAZARD[self.fire_hazard_class]


@dataclass(frozen=True)
class TenantRegister:
    """Tenants by ID, with the line each was defined on (for cross-file errors)."""

    tenants: Mapping[str, Tenant]
    lines: Mapping[str, int]
    source: str = ""

    def get(self, tenant_id: str) -> Tenant | None:
        return self.tenants.get(tenant_id)

    def __contains__(self, tenant_id: object) -> bool:
        return tenant_id in self.tenants

    def __len__(self) -> int:
        return len(self.tenants)

    def __iter__(self) -> Iterator[Tenant]:
        return iter(self.tenants.values())


def load_tenants(path: str | Path) -> TenantRegister:
    """Load a ``.yaml``/``.yml`` or ``.csv`` register; TenantRegisterError lists every problem."""
    path = Path(path)
    if not path.is_file():
        raise TenantRegisterError(str(path), [f"{path}: file not found"])
    errors: list[str] = []
    rows = _csv_rows(path, errors) if path.suffix.lower() == ".csv" else _yaml_rows(path)
    return build_tenants(rows, source=str(path), errors=errors)


def build_tenants(rows: Sequence[tuple[int, Mapping[str, Any]]], *, source: str,
                  errors: list[str] | None = None) -> TenantRegister:
    """Validate (line, row) pairs, collecting every error before raising."""
    errors = list(errors or [])
    tenants: dict[str, Tenant] = {}
    lines: dict[str, int] = {}
    for line, row in rows:
        try:
            tenant = Tenant.model_validate(row)
        except ValidationError as exc:
            errors.extend(_format_errors(source, line, row, exc))
            continue
        if tenant.id in tenants:
            errors.append(f"{source}:{line}: tenant {tenant.id!r} is a duplicate "
                          f"(first defined on line {lines[tenant.id]})")
            continue
        tenants[tenant.id] = tenant
        lines[tenant.id] = line
    if errors:
        raise TenantRegisterError(source, errors)
    return TenantRegister(tenants=tenants, lines=lines, source=source)


def load_tenants_for(path: str | Path, registry: Registry) -> TenantRegister:
    """The register at ``path``, checked against ``registry``: a device whose tenant is not in
    the register is an error naming its registry line (TenantRegisterError lists them all)."""
    register = load_tenants(path)
    problems = unknown_tenants(registry, register)
    if problems:
        raise TenantRegisterError(registry.source, problems)
    return register


def unknown_tenants(registry: Registry, register: TenantRegister) -> list[str]:
    """One problem per registry device whose ``tenant`` is not in the register, each naming
    the registry row a person must fix."""
    out = []
    for device in registry:
        if device.tenant is not None and device.tenant not in register:
            line = registry.lines.get(device.device)
            where = f"{registry.source}:{line}" if line else registry.source
            out.append(f"{where}: device {device.device!r}: tenant: {device.tenant!r} is not in "
                       f"the tenant register {register.source}")
    return out


def _format_errors(source: str, line: int, row: Mapping[str, Any],
                   exc: ValidationError) -> Iterator[str]:
    name = row.get("id", "?")
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(row)"
        value = err.get("input")
        shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        if err["type"] in ("missing", "extra_forbidden"):
            shown = ""
        msg = "unknown key" if err["type"] == "extra_forbidden" else \
            str(err["msg"]).removeprefix("Value error, ")
        yield f"{source}:{line}: tenant {name!r}: {key}: {msg}{shown}"


def _yaml_rows(path: Path) -> list[tuple[int, Mapping[str, Any]]]:
    doc, lines = load_config_file(path, TenantRegisterError)
    if not isinstance(doc, dict) or not isinstance(doc.get("tenants"), list):
        raise TenantRegisterError(str(path), [
            f"{path}:1: expected a mapping with a 'tenants:' list"])
    extra = [k for k in doc if k != "tenants"]
    if extra:
        raise TenantRegisterError(str(path), [
            f"{path}:{lines.get((k,), 1)}: {k}: unknown top-level key (only 'tenants' is allowed)"
            for k in extra])
    rows: list[tuple[int, Mapping[str, Any]]] = []
    for index, item in enumerate(doc["tenants"]):
        line = lines.get(("tenants", index), 0)
        if not isinstance(item, dict):
            raise TenantRegisterError(str(path), [f"{path}:{line}: each tenant must be a mapping"])
        row = dict(item)
        if isinstance(row.get("id"), int) and not isinstance(row.get("id"), bool):
            row["id"] = str(row["id"])
        rows.append((line, row))
    return rows


def _csv_rows(path: Path, errors: list[str]) -> list[tuple[int, Mapping[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
            raise TenantRegisterError(str(path), [
                f"{path}:1: CSV header must be exactly: {','.join(CSV_HEADER)} (got: "
                f"{','.join(header or [])})"])
        rows: list[tuple[int, Mapping[str, Any]]] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(CSV_HEADER):
                errors.append(f"{path}:{reader.line_num}: expected {len(CSV_HEADER)} columns, "
                              f"got {len(row)} (a comma inside a cell needs quotes)")
                continue
            rows.append((reader.line_num, _nest({k: v.strip() for k, v in
                                                 zip(CSV_HEADER, row, strict=True) if v.strip()})))
        return rows


def _nest(flat: Mapping[str, str]) -> dict[str, Any]:
    """CSV columns → the YAML shape, so both are validated (and reported) alike."""
    out: dict[str, Any] = {k: v for k, v in flat.items()
                           if not k.startswith(("responsible_", "manager_"))}
    for prefix, key in (("responsible_", "fire_safety_responsible"),
                        ("manager_", "fire_safety_manager")):
        person = {k.removeprefix(prefix): v for k, v in flat.items() if k.startswith(prefix)}
        if person:
            out[key] = person
    return out
