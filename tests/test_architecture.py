"""ARCHITECTURE.md names real files and real functions: a move or a rename must update it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
QUESTIONS = ("where a reading is validated", "where the WAL fsyncs", "where a PUBACK is sent",
             "where a person's acknowledgement is stored", "where a webhook is signed",
             "where a rule is evaluated", "where a notification is routed")


def _rows() -> list[tuple[str, str, str]]:
    rows = []
    for line in DOC.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("where "):
            rows.append((cells[0], cells[1], cells[2]))
    return rows


def test_every_question_of_the_issue_has_an_answer() -> None:
    answered = {question for question, _, _ in _rows()}
    assert set(QUESTIONS) <= answered


def test_every_named_path_exists() -> None:
    paths = set(re.findall(r"`((?:gateway|sensors|rules|tests|config)/[\w/.-]*)`", DOC))
    assert paths, "no paths found: did the table's format change?"
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"


def test_every_named_function_is_in_its_file() -> None:
    for question, file_cell, look_for in _rows():
        file = ROOT / file_cell.strip("`")
        source = file.read_text(encoding="utf-8")
        # The first backticked name of "look for" belongs to the row's file.
        name = re.findall(r"`([\w.]+)`", look_for)[0]
        last = name.rsplit(".", 1)[-1]
        assert re.search(rf"\b(def|class) {re.escape(last)}\b", source), \
            f"{question}: {name} is not defined in {file_cell}"
