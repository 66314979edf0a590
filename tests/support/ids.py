"""Unique names, so tests sharing one broker and one InfluxDB never see each other's data."""

from __future__ import annotations

import itertools
import os

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    # The pid keeps names apart across processes (a test's gateway subprocess, parallel runs).
    return f"{prefix}{os.getpid()}x{next(_counter)}"


def unique_db_name(test_name: str) -> str:
    """A PostgreSQL database name for one test: lower-case, at most 63 bytes, unique."""
    stem = "".join(c if c.isalnum() else "_" for c in test_name.lower())[:40]
    return unique(f"t_{stem}_")
