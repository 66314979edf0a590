"""The test tree's layout: test modules share code only through tests/support/.

A test module imported by another runs its imports, fixtures and marks where nobody reads them,
and its private helpers change as if they were local; conftest.py is pytest's plugin file, not
a library. So no module under tests/ (nor bench/ or scripts/, which reuse test helpers) may
import ``tests.test_*`` or ``tests.conftest``, including inside a function or in the source of
a subprocess kept in a string. And the project's own packages are imported, never
``importorskip``-ed: a broken import must fail the run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.paths import ROOT

SCANNED = ("tests", "bench", "scripts")
# Code run in a subprocess (``python -c``) is a string to ast; this finds its imports.
_IMPORT_IN_TEXT = re.compile(
    r"^\s*(?:from\s+([\w.]+)\s+import\s+\(?\s*([\w, ]*)|import\s+([\w., ]+))", re.MULTILINE)


def _forbidden(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "tests" and len(parts) > 1 and (
        parts[1] == "conftest" or parts[1].startswith("test_"))


def _imported(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    """Every module ``node`` imports, absolute; ``from p import m`` counts ``p.m`` too."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        base = ".".join([*anchor, base] if base else anchor)
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _imported_in_text(text: str) -> list[str]:
    found = []
    for match in _IMPORT_IN_TEXT.finditer(text):
        module, names, plain = match.groups()
        if module:
            found += [module, *(f"{module}.{n.split()[0]}" for n in names.split(",") if n.strip())]
        else:
            found += [m.split()[0] for m in plain.split(",") if m.strip()]
    return found


def bad_imports(source: str, package: str, *, in_strings: bool = True) -> list[str]:
    """The forbidden modules that ``source``, code in ``package`` (dotted name), imports;
    with ``in_strings``, also those imported by code held in its string literals."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = _imported(node, package)
        elif in_strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = _imported_in_text(node.value)
        else:
            continue
        hits = [name for name in names if _forbidden(name)]
        if hits:  # ``from tests.test_x import y`` also yields tests.test_x.y: name the module
            bad.append(f"line {node.lineno}: {min(hits, key=len)}")
    return bad


def _modules() -> list[tuple[Path, str]]:
    """Every scanned file with the package its relative imports start from."""
    return [(path, ".".join(path.relative_to(ROOT).parent.parts))
            for top in SCANNED for path in sorted((ROOT / top).rglob("*.py"))]


def test_no_module_imports_a_test_module_or_conftest() -> None:
    modules = _modules()
    # An empty scan would pass; this module, conftest and the support package must be in it.
    paths = {path.relative_to(ROOT).as_posix() for path, _ in modules}
    assert {"tests/test_layout.py", "tests/conftest.py", "tests/support/__init__.py"} <= paths
    # This module's own examples below are strings of forbidden imports by design.
    problems = [f"{path.relative_to(ROOT)}: {bad}" for path, package in modules
                for bad in bad_imports(path.read_text(encoding="utf-8"), package,
                                       in_strings=path != Path(__file__).resolve())]
    assert not problems, ("import shared helpers from tests.support, never from a test module "
                          "or conftest:\n  " + "\n  ".join(problems))


OWN_PACKAGES = ("gateway", "sensors", "rules")


def test_the_project_is_never_imported_with_importorskip() -> None:
    # A broken import of our own code must fail the run, not turn into a quiet skip.
    skipped = []
    for path, _ in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "importorskip" and node.args):
                continue
            name = ast.literal_eval(node.args[0]) if isinstance(node.args[0], ast.Constant) else ""
            if str(name).split(".")[0] in OWN_PACKAGES:
                skipped.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert not skipped, "import the project's own modules normally:\n  " + "\n  ".join(skipped)


@pytest.mark.parametrize("source", [
    "from tests.test_pipeline_e2e import plan\n",
    "import tests.test_pipeline_e2e\n",
    "import os, tests.test_pipeline_e2e as p\n",
    "from tests import test_pipeline_e2e\n",
    "from tests import conftest\n",
    "from tests.conftest import wait_for\n",
    "from .test_pipeline_e2e import plan\n",
    "from . import conftest\n",
    "def f() -> None:\n    from tests.test_alarmstore import make_alarm\n",
    'SCRIPT = """\nimport sys\nfrom tests.test_alarmstore import full_alarm\n"""\n',
    'SCRIPT = """\nfrom tests.test_alarmstore import (\n    full_alarm,\n)\n"""\n',
    'SCRIPT = """\nfrom tests import test_alarmstore as t\n"""\n',
])
def test_each_way_of_importing_a_test_module_is_caught(source: str) -> None:
    assert bad_imports(source, "tests"), source


@pytest.mark.parametrize("source", [
    "from tests.support.readings import plan\n",
    "from tests.support import readings\n",
    "import tests.support.chaos\n",
    "from .support.gateway import make_settings\n",
    'SCRIPT = """\nfrom tests.support.alarms import full_alarm\n"""\n',
    "TEXT = 'see tests/test_pipeline_e2e.py'\n",
])
def test_imports_from_support_are_allowed(source: str) -> None:
    assert bad_imports(source, "tests") == []
