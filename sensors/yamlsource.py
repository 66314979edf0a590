"""YAML loading that remembers where each key was, so errors can name the file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sensors.errors import ConfigError

#: Path inside the document (keys and list indexes) -> 1-based line number.
LineMap = dict[tuple[str | int, ...], int]


def load_yaml_with_lines(path: Path) -> tuple[Any, LineMap]:
    """Parse ``path`` safely, returning the document and the line of every key and list item."""
    text = path.read_text(encoding="utf-8")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: LineMap = {}
        if node is not None:
            _walk(node, (), lines)
        doc = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return doc, lines


def load_config_file(path: Path, error: type[ConfigError] = ConfigError) -> tuple[Any, LineMap]:
    """Like :func:`load_yaml_with_lines`, but a missing file or broken YAML becomes ``error``
    (a ConfigError) naming the file, as every config-like file of ParkWatch reports it."""
    if not path.is_file():
        raise error(str(path), [f"{path}: file not found"])
    try:
        return load_yaml_with_lines(path)
    except yaml.YAMLError as exc:
        raise error(str(path), [f"{path}: not valid YAML: {exc}"]) from exc


def _walk(node: yaml.Node, path: tuple[str | int, ...], lines: LineMap) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), lines)
            # Keep the key's own line: it is what a person looks for in the file.
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines)


def line_for(lines: LineMap, loc: tuple[str | int, ...]) -> int | None:
    """The line of the deepest known prefix of ``loc`` (pydantic locations can go deeper)."""
    for end in range(len(loc), -1, -1):
        line = lines.get(tuple(loc[:end]))
        if line is not None:
            return line
    return None
