"""Write the CSV form of a YAML device registry, so the two sample files never drift.

    uv run python scripts/registry_to_csv.py config/sample-park/registry.yaml            # write
    uv run python scripts/registry_to_csv.py config/sample-park/registry.yaml --check    # verify

The CSV is what a park office would export from a spreadsheet (docs/configuration.md, Device
registry): it has the documented exact header and no columns for ``limits``, ``mode``, ``supply`` or
``heat_class``, which only the YAML form can carry. The YAML is validated with the gateway's
own loader first, so a broken YAML never yields a CSV.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

from sensors.errors import RegistryError
from sensors.registry import CSV_HEADER, Device, load_registry


def _cell(device: Device, column: str) -> str:
    value = getattr(device, column)
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # "60", not "60.0": what a spreadsheet exports
    return str(value)


def render_csv(yaml_path: Path) -> str:
    """The CSV text for the registry at ``yaml_path``, devices in file order."""
    registry = load_registry(yaml_path)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for device in registry:
        writer.writerow([_cell(device, column) for column in CSV_HEADER])
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("yaml", type=Path, help="registry YAML to convert")
    parser.add_argument("-o", "--output", type=Path,
                        help="CSV to write (default: the YAML path with .csv)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the CSV differs from what would be written")
    args = parser.parse_args(argv)
    target: Path = args.output or args.yaml.with_suffix(".csv")
    try:
        text = render_csv(args.yaml)
    except RegistryError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current != text:
            print(f"{target} is out of date; run: python {sys.argv[0]} {args.yaml}",
                  file=sys.stderr)
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target} ({text.count(chr(10)) - 1} devices)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
