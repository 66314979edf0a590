"""Load rule files (``rules:`` lists in YAML) into a :class:`RuleSet`.

Every problem in every file is collected and reported together, each with file, line and key,
so a rule author fixes a pack in one pass. Loading is safe YAML only: no tags, no code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from rules.model import AnyRule, CoincidenceRule, Rule, RuleSet
from sensors.errors import ConfigError
from sensors.yamlsource import LineMap, line_for, load_yaml_with_lines

_ADAPTER: TypeAdapter[AnyRule] = TypeAdapter(Rule)


def load_rules(path: str | Path) -> RuleSet:
    """Load one rule file or every ``*.yaml``/``*.yml`` file of a directory (sorted by name)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        if not files:
            raise ConfigError(str(path), [f"{path}: no rule files (*.yaml) in this directory"])
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(str(path), [f"{path}: no such file or directory"])
    problems: list[str] = []
    parsed: list[tuple[AnyRule, str]] = []
    for file in files:
        parsed.extend(_load_file(file, problems))
    return _finish(parsed, str(path), problems)


def rules_from_data(items: Sequence[Mapping[str, Any]], *, source: str,
                    lines: LineMap | None = None,
                    prefix: tuple[str | int, ...] = ()) -> RuleSet:
    """Validate rules given as data (inline rules of a rule test, an API); same checks."""
    problems: list[str] = []
    parsed = list(_validate_items(items, source, lines or {}, prefix, problems))
    return _finish(parsed, source, problems)


def _load_file(file: Path, problems: list[str]) -> Iterable[tuple[AnyRule, str]]:
    try:
        doc, lines = load_yaml_with_lines(file)
    except yaml.YAMLError as exc:
        problems.append(f"{file}: not valid YAML: {exc}")
        return []
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        problems.append(f"{file}:1: expected a mapping with a 'rules:' list")
        return []
    for key in doc:
        if key != "rules":
            problems.append(f"{file}:{lines.get((key,), 1)}: {key}: unknown top-level key "
                            "(only 'rules' is allowed)")
    return list(_validate_items(doc["rules"], str(file), lines, ("rules",), problems))


def _validate_items(items: Sequence[Any], source: str, lines: LineMap,
                    prefix: tuple[str | int, ...],
                    problems: list[str]) -> Iterable[tuple[AnyRule, str]]:
    for index, item in enumerate(items):
        here = (*prefix, index)
        line = lines.get(here, 0)
        if not isinstance(item, dict):
            problems.append(f"{source}:{line}: each rule must be a mapping")
            continue
        name = item.get("name", "?")
        try:
            rule = _ADAPTER.validate_python(item)
        except ValidationError as exc:
            errors = exc.errors()
            locs = [tuple(e["loc"]) for e in errors]
            for err in errors:
                loc = tuple(err["loc"])
                # "tiers: too short" after a bad tier is noise: the tier's own error says it.
                if any(len(o) > len(loc) and o[:len(loc)] == loc for o in locs):
                    continue
                # A tagged union puts the tag first ("threshold", "tiers", 0, ...): drop it.
                if loc and loc[0] == item.get("type"):
                    loc = loc[1:]
                key = ".".join(str(p) for p in loc) or "(rule)"
                at = line_for(lines, (*here, *loc)) or line
                msg = str(err["msg"]).removeprefix("Value error, ")
                problems.append(f"{source}:{at}: rule {name!r}: {key}: {msg}")
            continue
        yield rule, f"{source}:{line}"


def _finish(parsed: list[tuple[AnyRule, str]], source: str, problems: list[str]) -> RuleSet:
    seen: dict[str, str] = {}
    for rule, where in parsed:
        for name in (rule.name, *rule.sub_rules()):
            if name in seen:
                problems.append(f"{where}: rule name {name!r} is a duplicate "
                                f"(first defined at {seen[name]})")
            else:
                seen[name] = where
    for rule, where in parsed:
        if isinstance(rule, CoincidenceRule):
            missing = [s for s in rule.signals if s not in seen]
            if missing:
                problems.append(f"{where}: rule {rule.name!r}: signals: unknown rule(s) "
                                f"{missing}")
    if problems:
        raise ConfigError(source, problems)
    return RuleSet(rules=tuple(r for r, _ in parsed), origin=seen)
