"""``parkwatch migrate-store``: a single box's SQLite alarm store into the shared PostgreSQL one
of the configuration given (docs/scale.md, "From one box to a shared store").

The copy itself is :func:`gateway.alarms.migrate.copy_store`; this module finds the two
databases, says what it copies, table by table, and what to do next.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.alarms.db import AlarmStoreError
from gateway.alarms.migrate import Copied, copy_store
from gateway.alarms.sqlite import SqliteBackend
from gateway.cluster.partitions import Partition
from gateway.config import Settings
from sensors.errors import ConfigError
from sensors.registry import Registry

EXIT_FAILED = 1


def add_store_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                      handler: Callable[[argparse.Namespace], int]) -> None:
    """``handler``: :func:`run_migrate_store` with the configuration loaded (cli._configured)."""
    p = sub.add_parser("migrate-store",
                       help="copy a single box's SQLite alarm store into the PostgreSQL store "
                            "of --config (docs/scale.md); stop every gateway first")
    p.add_argument("--config", "-c", type=Path, default=None,
                   help="the NEW setup's config (alarms.backend: postgres)")
    p.add_argument("--from", dest="source", type=Path, required=True,
                   help="the old box's alarm store, e.g. /var/lib/parkwatch/alarms.sqlite3")
    p.set_defaults(handler=handler)


def run_migrate_store(args: argparse.Namespace, settings: Settings, registry: Registry) -> int:
    del registry   # loaded (and so checked) by the caller; the copy does not need it
    if settings.alarms.backend != "postgres":
        raise ConfigError("alarms.backend", [
            "alarms.backend: the config given is the sqlite one; give the new setup's config "
            "(alarms.backend: postgres), the store to copy into"])
    source: Path = args.source
    if not source.is_file():
        print(f"parkwatch: {source}: no such alarm store file", file=sys.stderr)
        return EXIT_FAILED
    # Imported here: psycopg is only loaded by commands that use it.
    from gateway.alarms.postgres import PostgresBackend

    partition = Partition.from_settings(settings.cluster)
    target_backend = PostgresBackend(settings.alarms.dsn())
    print(f"copying {source} into {target_backend.label}"
          f" (partition {partition.name or 'default'})", flush=True)

    def progress(done: Copied) -> None:
        print(f"  {done.table:<18} {done.rows:>9,} rows", flush=True)
    try:
        src = SqliteBackend(source).connect()
        try:
            dst = target_backend.connect()
            try:
                copied = copy_store(src, dst, partition=partition.name or "default",
                                    owns=partition.owns, progress=progress)
            finally:
                dst.close()
        finally:
            src.close()
    except AlarmStoreError as exc:
        print(f"parkwatch: nothing copied: {exc}", file=sys.stderr)
        return EXIT_FAILED
    total = sum(c.rows for c in copied)
    print(f"done: {total:,} rows in one transaction. Start the gateways with this config; keep "
          f"{source} until they run (the old box must not start again on it).")
    return 0
