"""Where the repository and its sample data are, whatever the working directory."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_REGISTRY = ROOT / "config" / "sample-park" / "registry.yaml"
