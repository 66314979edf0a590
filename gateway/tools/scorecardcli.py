"""``parkwatch scorecard``: the park safety scorecard for a period (docs/scorecard.md).

Reads the configuration's alarm store file and InfluxDB; prints a table, CSV, JSON or the
printable HTML page; with ``--write`` also stores one ``scorecard`` point per day of the period
(park and each tenant) directly in InfluxDB.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.config import Settings
from gateway.scorecard import render
from gateway.scorecard.collect import collect
from gateway.scorecard.daily import daily_lines, days
from gateway.scorecard.influxsource import write_lines
from gateway.scorecard.model import Period
from gateway.scorecard.report import Inputs, as_dict, compute, with_tenant_info
from sensors.errors import ConfigError, ParkWatchError
from sensors.registry import Registry
from sensors.tenants import TenantRegister, load_tenants_for

EXIT_FAILED = 1
#: Kept importable from here (tests, older callers); they live in gateway.scorecard.daily.
__all__ = ["daily_lines", "days", "parse_period", "run_scorecard"]


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def parse_period(*, period: str | None, start: str | None, end: str | None, tz: ZoneInfo
                 ) -> Period:
    """``--period YYYY-MM`` (the park's calendar month) or ``--from``/``--to`` (dates or ISO
    times in the park's time zone; ``--to`` is exclusive)."""
    if period is not None:
        try:
            first = dt.datetime.strptime(period, "%Y-%m").replace(tzinfo=tz)
        except ValueError as exc:
            raise ConfigError("--period", [f"--period: {period!r} is not YYYY-MM"]) from exc
        nxt = (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        return Period(_ms(first), _ms(nxt))
    if start is None or end is None:
        raise ConfigError("--from", ["give --period YYYY-MM, or both --from and --to"])
    try:
        a, b = (_when(x, tz) for x in (start, end))
        return Period(_ms(a), _ms(b))
    except ValueError as exc:
        raise ConfigError("--from", [f"--from/--to: {exc}"]) from exc


def _when(text: str, tz: ZoneInfo) -> dt.datetime:
    t = dt.datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=tz)


def run_scorecard(args: argparse.Namespace, settings: Settings, registry: Registry) -> int:
    if args.park not in registry.parks():
        raise ConfigError("--park", [f"--park: no device of park {args.park!r} in "
                                     f"{settings.registry}"])
    tz = settings.timezone_for(args.park)
    # Company names and people for the page, the table and JSON (a bad register: exit 2).
    register = (load_tenants_for(settings.tenants, registry)
                if settings.tenants is not None else None)
    as_of = time.time_ns() // 1_000_000
    asked = parse_period(period=args.period, start=args.start, end=args.end, tz=tz)
    if asked.start_ms >= as_of:
        raise ConfigError("--period", ["the period has not started yet"])
    # A period still running is counted up to now: future minutes are not offline minutes.
    period = Period(asked.start_ms, min(asked.end_ms, as_of))
    try:
        inputs = asyncio.run(collect(settings, registry, park=args.park, period=period,
                                     as_of_ms=as_of))
        if args.write:
            lines = daily_lines(inputs, park=args.park, period=period, tz=tz, as_of_ms=as_of)
            asyncio.run(write_lines(settings.influx, lines))
            print(f"scorecard: wrote {len(lines)} daily point(s)", file=sys.stderr)
    except ParkWatchError as exc:
        print(f"parkwatch scorecard: {exc}", file=sys.stderr)
        return EXIT_FAILED
    doc = with_tenant_info(as_dict(compute(inputs, park=args.park, period=period,
                                           as_of_ms=as_of, tenant=args.tenant)), register)
    sys.stdout.write(_render(args.format, doc, inputs, args, period, as_of, tz, register))
    return 0


def _render(fmt: str, doc: dict[str, object], inputs: Inputs, args: argparse.Namespace,
            period: Period, as_of: int, tz: ZoneInfo, register: TenantRegister | None) -> str:
    if fmt == "csv":
        return render.as_csv(doc)
    if fmt == "table":
        return render.as_table(doc, tz)
    # The park's page and JSON carry each tenant's scorecard too.
    tenants = [] if args.tenant else [
        with_tenant_info(as_dict(compute(inputs, park=args.park, period=period,
                                         as_of_ms=as_of, tenant=t)), register)
        for t in inputs.tenants()]
    if fmt == "json":
        return render.as_json({**doc, "tenants": tenants}) + "\n"
    return render.as_html(doc, tz, tenants)


def add_scorecard_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                          handler: Callable[[argparse.Namespace], int]) -> None:
    """``handler``: :func:`run_scorecard` with the configuration loaded (cli._configured)."""
    p = sub.add_parser("scorecard", help="the park safety scorecard for a period "
                                         "(docs/scorecard.md)")
    p.add_argument("--config", "-c", type=Path, default=None,
                   help="YAML config file (env PARKWATCH_* overrides it)")
    p.add_argument("--park", required=True)
    p.add_argument("--tenant", default=None, help="only this tenant's devices and alarms")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--period", default=None, help="a calendar month, YYYY-MM")
    when.add_argument("--from", dest="start", default=None, help="start (date or ISO time)")
    p.add_argument("--to", dest="end", default=None, help="end, exclusive (date or ISO time)")
    p.add_argument("--format", choices=("table", "csv", "json", "html"), default="table")
    p.add_argument("--write", action="store_true",
                   help="also store one scorecard point per whole day in InfluxDB")
    p.set_defaults(handler=handler)
