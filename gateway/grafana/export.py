"""``parkwatch grafana export [--lang zh-CN|en] [--out DIR] [--check]``: the generated
dashboards as files, one folder per language (en: deploy/grafana/dashboards, zh-CN:
deploy/grafana/dashboards-zh-CN; the compose stack mounts the Chinese set).

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
#: Where each language's set is committed.
OUT_BY_LANG = {"en": DEFAULT_OUT, "zh-CN": Path("deploy/grafana/dashboards-zh-CN")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lang", choices=sorted(OUT_BY_LANG), default="en",
                        help="language of titles, legends and value texts (default en)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="directory for <name>.json files (default: "
                             f"{OUT_BY_LANG['en']} for en, {OUT_BY_LANG['zh-CN']} for zh-CN)")
    parser.add_argument("--rules", type=Path, default=None, metavar="PATH",
                        help="alarm rules whose thresholds are drawn (default: config/rules)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing the files that differ or are missing")


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def rendered(rules: Path | None = None, lang: str = "en") -> dict[str, str]:
    """File name → file content for every dashboard in ``lang``."""
    from gateway.grafana.dashboards import build_all, schema

    dashboards = build_all(rules or schema.DEFAULT_RULES, lang)
    return {f"{stem}.json": render(doc) for stem, doc in dashboards.items()}


def stale(out: Path, files: dict[str, str]) -> list[str]:
    """Names of files in ``out`` that are missing or differ from ``files``."""
    return sorted(name for name, text in files.items()
                  if not (out / name).is_file()
                  or (out / name).read_text(encoding="utf-8") != text)


def run(args: argparse.Namespace) -> int:
    files = rendered(args.rules, args.lang)
    out: Path = args.out or OUT_BY_LANG[args.lang]
    if args.check:
        differ = stale(out, files)
        for name in differ:
            print(f"{out / name}: differs from the generated dashboard", file=sys.stderr)
        if differ:
            print(f"run: parkwatch grafana export --lang {args.lang}", file=sys.stderr)
            return 1
        print(f"{len(files)} dashboards in {out} are up to date")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} dashboards to {out}")
    return 0
