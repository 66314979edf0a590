"""What the installed wheel needs is declared: every third-party module that gateway/, sensors/ or
rules/ imports comes from a distribution listed in pyproject's ``[project] dependencies``.

A package that is only there because another dependency pulls it in (yarl under aiohttp, requests
under grafana-client) would vanish, or change major version, the day that dependency stops
needing it.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("gateway", "sensors", "rules")


def _declared() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    names = set()
    for spec in pyproject["project"]["dependencies"]:
        match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
        assert match, spec
        names.add(_normalise(match.group(0)))
    return names


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Dotted absolute module names imported by one file, with their line numbers."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno


def _distribution(module: str, candidates: list[str]) -> list[str]:
    """The distributions that provide ``module``: for a namespace package shared by several
    distributions (``tencentcloud``), those whose files hold the imported sub-package."""
    if len(candidates) == 1:
        return candidates
    parts = module.split(".")
    for depth in range(len(parts), 1, -1):
        prefix = "/".join(parts[:depth])
        owners = [d for d in candidates
                  if any(str(f).startswith((prefix + "/", prefix + ".py"))
                         for f in importlib.metadata.distribution(d).files or ())]
        if owners:
            return owners
    return candidates


def test_every_third_party_import_is_declared() -> None:
    declared = _declared()
    providers = importlib.metadata.packages_distributions()
    stdlib = sys.stdlib_module_names
    missing: list[str] = []
    for package in OURS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for module, line in _imports(path):
                top = module.split(".")[0]
                if top in stdlib or top in OURS or top == "__future__":
                    continue
                candidates = providers.get(top)
                if not candidates:
                    missing.append(f"{path.relative_to(ROOT)}:{line}: {module} (not installed)")
                    continue
                dists = _distribution(module, candidates)
                if not any(_normalise(d) in declared for d in dists):
                    missing.append(f"{path.relative_to(ROOT)}:{line}: {module} comes from "
                                   f"{', '.join(dists)}, not in [project] dependencies")
    assert not missing, "undeclared imports:\n" + "\n".join(missing)
