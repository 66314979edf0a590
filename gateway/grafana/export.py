"""``parkwatch grafana export [--out DIR] [--check]``: the generated dashboards as files.

Output is deterministic (sorted keys, 2-space indent, trailing newline), so the committed JSON
can be compared byte for byte with what the code generates; ``--check`` does that for CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("deploy/grafana/dashboards")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
                        help=f"directory for <name>.json files (default: {DEFAULT_OUT})")
    parser.add_argument("--rules", type=Path, default=None, metavar="PATH",
                        help="alarm rules whose thresholds are drawn (default: config/rules)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing the files that differ or are missing")


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def rendered(rules: Path | None = None) -> dict[str, str]:
    """File name → file content for every dashboard."""
    from gateway.grafana.dashboards import build_all, schema

    dashboards = build_all(rules or schema.DEFAULT_RULES)
    return {f"{stem}.json": render(doc) for stem, doc in dashboards.items()}


def stale(out: Path, files: dict[str, str]) -> list[str]:
    """Names of files in ``out`` that are missing or differ from ``files``."""
    return sorted(name for name, text in files.items()
                  if not (out / name).is_file()
                  or (out / name).read_text(encoding="utf-8") != text)


def run(args: argparse.Namespace) -> int:
    files = rendered(args.rules)
    out: Path = args.out
    if args.check:
        differ = stale(out, files)
        for name in differ:
            print(f"{out / name}: differs from the generated dashboard", file=sys.stderr)
        if differ:
            print("run: parkwatch grafana export", file=sys.stderr)
            return 1
        print(f"{len(files)} dashboards in {out} are up to date")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} dashboards to {out}")
    return 0
