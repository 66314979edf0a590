"""The ``parkwatch`` command line.

  run [--dry-run]                  run the gateway (--dry-run logs notifications, sends none)
  check-config                     validate the config and device registry, connect to nothing
  check-rules                      validate the alarm rules; dry-run them on a --recording
  simulate                         publish simulated sensor traffic for the registry
  simulate --uitd HOST:PORT        play the point map's fire-panel UITDs over GB/T 26875.3
  top                              live terminal view of a running gateway
  notify test                      send a test message through one notification channel
  alarms list|show|ack|reclassify|history  list, show, acknowledge, correct alarms of a gateway
  maintenance set|clear|list       test / isolated modes of a running gateway
  uitd list|duty-check             UITDs (GB/T 26875.3) of a running gateway; send a duty check
  scorecard --park P --period M    the park safety scorecard (table, csv, json, printable html)
  migrate-store --from FILE        copy a single box's SQLite alarm store into --config's PostgreSQL
  grafana export|push              write the dashboard JSON files / upsert them into Grafana
  demo                             broker, InfluxDB, gateway and simulator with the live view
  --version                        print the installed version

``parkwatch COMMAND --help`` lists a command's options. Exit codes: 0 ok, 1 failed, 2 a
configuration or usage problem; see gateway.tools.alarmcli and gateway.grafana.push for the
codes their commands add.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import web

from gateway.config import Settings, load_settings
from gateway.storage.private import UMASK
from rules.alarm import iso
from sensors.errors import ConfigError, ParkWatchError
from sensors.pointmap import load_point_map
from sensors.registry import Registry, load_registry
from sensors.tenants import load_tenants_for

if TYPE_CHECKING:
    from gateway.cluster.lease import Lease
    from gateway.cluster.standby import Role

log = logging.getLogger("parkwatch")

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    handler = args.handler
    return int(handler(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parkwatch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway")
    _config_arg(run)
    run.add_argument("--dry-run", action="store_true",
                     help="log notifications (through the outbox and audit) instead of sending")
    run.set_defaults(handler=_cmd_run)

    check = sub.add_parser("check-config", help="validate config and registry without connecting")
    _config_arg(check)
    check.set_defaults(handler=_cmd_check)

    rules = sub.add_parser("check-rules", help="validate alarm rules; dry-run them against a "
                                               "recording of readings")
    _config_arg(rules)
    rules.add_argument("--rules", type=Path, default=None,
                       help="rules file or folder (default: the config's `rules`)")
    rules.add_argument("--recording", type=Path, default=None,
                       help="JSON lines of readings/events/status to replay through the rules")
    rules.set_defaults(handler=_cmd_check_rules)

    sim = sub.add_parser("simulate", help="publish simulated sensor traffic for the registry")
    _config_arg(sim)
    from gateway.tools.simulator.runner import add_arguments
    from gateway.tools.simulator.uitd import add_arguments as add_uitd_arguments

    add_arguments(sim)
    add_uitd_arguments(sim)
    sim.set_defaults(handler=_cmd_simulate)

    top = sub.add_parser("top", help="live terminal view of a running gateway")
    top.add_argument("--url", default="http://127.0.0.1:8080", help="gateway HTTP address")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--config", "-c", type=Path, default=None,
                     help="the gateway's config, to find its API token")
    top.set_defaults(handler=_cmd_top)

    notify = sub.add_parser("notify", help="notification tools")
    notify_sub = notify.add_subparsers(required=True, metavar="ACTION")
    ntest = notify_sub.add_parser("test", help="send a test message through one channel")
    ntest.add_argument("--channel", required=True, help="channel name from the routing file")
    ntest.add_argument("--config", "-c", type=Path, default=None,
                       help="gateway config (its notify.config) or a routing file itself")
    ntest.add_argument("--to", default=None,
                       help="recipient (phone or email; robots and webhooks need none)")
    ntest.set_defaults(handler=_cmd_notify_test)

    from gateway.tools.alarmcli import add_alarm_commands

    add_alarm_commands(sub)

    from gateway.tools.uitdcli import add_uitd_commands

    add_uitd_commands(sub)

    from gateway.grafana.command import add_grafana_commands

    add_grafana_commands(sub)

    from gateway.tools.scorecardcli import add_scorecard_command, run_scorecard

    add_scorecard_command(sub, _configured(run_scorecard))

    from gateway.tools.storecli import add_store_command, run_migrate_store

    add_store_command(sub, _configured(run_migrate_store))

    demo = sub.add_parser("demo", help="start a broker, InfluxDB, the gateway and the simulator "
                                       "on project ports and show the live view")
    demo.add_argument("--data-dir", type=Path, default=Path(".demo"))
    demo.add_argument("--duration", type=float, default=None,
                      help="stop after this many seconds (default: until Ctrl-C)")
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _version() -> str:
    try:
        return importlib.metadata.version("parkwatch")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "(not installed)"


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, default=None,
                   help="YAML config file (env PARKWATCH_* overrides it)")


def load_all(config: Path | None) -> tuple[Settings, Registry]:
    """Settings and registry, or ConfigError listing every problem found in both."""
    settings = load_settings(config)
    registry = load_registry(settings.registry)
    if settings.tenants is not None:
        load_tenants_for(settings.tenants, registry)   # refuse to start on a tenant typo
    return settings, registry


def _report(exc: ConfigError) -> int:
    print(f"parkwatch: configuration has {len(exc.problems)} problem(s):", file=sys.stderr)
    for problem in exc.problems:
        print(f"  {problem}", file=sys.stderr)
    return EXIT_CONFIG


_Handler = Callable[[argparse.Namespace], int]
_ConfiguredHandler = Callable[[argparse.Namespace, Settings, Registry], int]


def _reported(handler: _Handler) -> _Handler:
    """A ConfigError out of ``handler`` is printed as its list of problems; exit 2."""
    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ConfigError as exc:
            return _report(exc)
    return run


def _configured(handler: _ConfiguredHandler) -> _Handler:
    """``handler(args, settings, registry)`` with ``--config`` and its registry loaded; a problem
    in either (or a ConfigError out of the handler) is reported as by :func:`_reported`."""
    @_reported
    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        settings, registry = load_all(args.config)
        return handler(args, settings, registry)
    return run


def _cmd_check(args: argparse.Namespace) -> int:
    problems: list[str] = []
    settings: Settings | None = None
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        problems.extend(exc.problems)
    registry: Registry | None = None
    if settings is not None:
        try:
            registry = load_registry(settings.registry)
        except ConfigError as exc:
            problems.extend(exc.problems)
    tenants = 0
    if settings is not None and registry is not None and settings.tenants is not None:
        try:
            tenants = len(load_tenants_for(settings.tenants, registry))
        except ConfigError as exc:     # TenantRegisterError: every row's problem as file:line
            problems.extend(exc.problems)
    points = 0
    if settings is not None and registry is not None and settings.uitd.points is not None:
        try:
            points = len(load_point_map(settings.uitd.points, registry))
        except ConfigError as exc:     # PointMapError: every row's problem as file:line
            problems.extend(exc.problems)
    owned: list[str] = []
    if settings is not None and registry is not None and settings.cluster.enabled:
        from gateway.cluster.partitions import Partition

        owned, cluster_problems = Partition.from_settings(settings.cluster).check(
            registry, settings.registry)
        problems.extend(cluster_problems)
    if problems:
        return _report(ConfigError(str(args.config), problems))
    assert settings is not None
    assert registry is not None
    buildings = {(d.park, d.building) for d in registry}
    kinds = {d.kind for d in registry}
    print(f"OK: {args.config or '(defaults)'}: {len(registry)} devices, {len(registry.parks())} "
          f"park(s), {len(buildings)} building(s), {len(kinds)} kinds; broker {settings.mqtt.url}, "
          f"InfluxDB {settings.influx.url}"
          + (f"; {points} panel points from {settings.uitd.points}" if settings.uitd.points
             else "")
          + (f"; {tenants} tenants from {settings.tenants}" if settings.tenants else "")
          + (f"; partition {settings.cluster.partition}: parks {', '.join(owned)}"
             if settings.cluster.enabled else ""))
    return 0


@_configured
def _cmd_check_rules(args: argparse.Namespace, settings: Settings, registry: Registry) -> int:
    from rules.dryrun import dry_run, read_recording
    from rules.loader import load_rules

    ruleset = load_rules(args.rules or settings.rules)
    print(f"OK: {len(ruleset.rules)} rules from {args.rules or settings.rules} for "
          f"{len(registry)} devices")
    if args.recording is None:
        return 0
    transitions = dry_run(ruleset, registry, read_recording(args.recording))
    shown = [t for t in transitions if t.published]
    print(f"dry run of {args.recording}: {len(shown)} alarm change(s)")
    for t in shown:
        a = t.after
        where = a.subject.device or (f"zone {a.subject.zone}" if a.subject.zone
                                     else f"building {a.subject.building}")
        print(f"  {iso(a.updated_at_ms)}  {a.state.value:<12} {a.severity.value:<8} "
              f"{a.rule:<28} {where:<14} {a.message}")
    return 0


@_configured
def _cmd_run(args: argparse.Namespace, settings: Settings, registry: Registry) -> int:
    from gateway.logs import setup_logging

    if getattr(args, "dry_run", False):
        settings = settings.model_copy(
            update={"notify": settings.notify.model_copy(update={"dry_run": True})})
    # Before anything creates a file: state, WAL and sockets private to this user (0700/0600).
    os.umask(UMASK)
    setup_logging(settings.observe.log_level, settings.observe.log_format)
    with asyncio.Runner(loop_factory=_loop_factory(settings.uvloop)) as runner:
        return runner.run(_run(settings, registry))


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where available (issue 15: its transports and callbacks cost less per message),
    else the standard loop."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    logging.getLogger(__name__).info("event loop: uvloop")
    return uvloop.new_event_loop


@_reported
def _cmd_notify_test(args: argparse.Namespace) -> int:
    from gateway.notify.testsend import send_test

    result = asyncio.run(send_test(args.config, args.channel, to=args.to))
    print(f"{args.channel}: {result.outcome.value}"
          + (f" ({result.detail})" if result.detail else "")
          + (f" provider id {result.provider_id}" if result.provider_id else ""))
    return 0 if result.outcome.value == "sent" else 1


async def _run(settings: Settings, registry: Registry) -> int:
    from gateway.http.app import start_http
    from gateway.runtime.gateway import Gateway

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lease, role = _lease(settings)
    runner: web.AppRunner | None = None
    try:
        # Before any wait: a configuration problem is reported now, not at takeover.
        gateway = Gateway(settings=settings, registry=registry, lease=lease, role=role)
        if lease is not None and role is not None:
            role.parks = gateway.parks
            if not await _standby(settings, lease, role, stop):
                return 0
        if settings.http.enabled:
            # Inside the try: an unreadable http.token_file is reported as a config problem.
            runner = await start_http(gateway, settings.http.host, settings.http.port)
            log.info("status endpoints on http://%s:%d/ (metrics, healthz, status)",
                     settings.http.host, settings.http.port)
        await gateway.run(stop)
    except ConfigError as exc:
        # Found only when connecting (e.g. InfluxDB version detection): same report as at start.
        return _report(exc)
    except ParkWatchError as exc:
        log.critical("gateway failed: %s", exc)
        return 1
    finally:
        if runner is not None:
            await runner.cleanup()
        if lease is not None:
            await lease.release()
            await lease.close()
    return 0


def _lease(settings: Settings) -> tuple[Lease | None, Role | None]:
    """With ``cluster.partition``: this process's lease (not yet held) and its role."""
    from gateway.cluster.lease import Lease, holder_id
    from gateway.cluster.standby import Role

    c = settings.cluster
    dsn = settings.lease_dsn()
    if c.partition is None or dsn is None:
        return None, None
    lease = Lease(dsn=dsn, partition=c.partition,
                  holder=holder_id(settings.instance), lease_s=c.lease_s)
    return lease, Role(partition=c.partition, holder=lease.holder)


async def _standby(settings: Settings, lease: Lease, role: Role, stop: asyncio.Event) -> bool:
    """Wait as the partition's standby (status on the HTTP port) until the lease is ours."""
    from gateway.cluster.standby import wait_for_lease
    from gateway.http.app import start_standby_http
    from gateway.runtime.leftovers import drain_leftovers

    log.info("partition %s: waiting for the lease as %s (parks %s)", lease.partition,
             lease.holder, ", ".join(role.parks))
    runner = (await start_standby_http(role, settings.http.host, settings.http.port)
              if settings.http.enabled else None)
    # What this instance acknowledged in an earlier life but never delivered (ack_after: wal).
    leftovers = asyncio.create_task(drain_leftovers(settings), name="standby-leftovers")
    try:
        acquired = await wait_for_lease(lease, stop, role)
    finally:
        leftovers.cancel()
        try:
            await leftovers
        except asyncio.CancelledError:
            pass
        except Exception:   # the gateway delivers the rest once active
            log.exception("standby: delivering the WAL's backlog failed")
        if runner is not None:
            await runner.cleanup()
    if acquired:
        log.info("partition %s: active (epoch %d), taking over client id %s", lease.partition,
                 lease.epoch, settings.client_id)
    return acquired


@_configured
def _cmd_simulate(args: argparse.Namespace, settings: Settings, registry: Registry) -> int:
    from gateway.tools.simulator.runner import main_from_args

    if args.uitd is not None:
        from gateway.tools.simulator import uitd

        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(uitd.main_from_args(args, settings, registry))
        return 130
    if args.mqtt_url is None:
        args.mqtt_url = _url_with_credentials(settings)
    if args.root is None:
        args.root = settings.mqtt.topic_root
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main_from_args(args, registry))
    return 130


def _url_with_credentials(settings: Settings) -> str:
    m = settings.mqtt
    if m.username is None:
        return m.url
    scheme, _, hostport = m.url.partition("://")
    auth = quote(m.username, safe="")
    if m.password is not None:
        auth += ":" + quote(m.password.get_secret_value(), safe="")
    return f"{scheme}://{auth}@{hostport}"


def _cmd_top(args: argparse.Namespace) -> int:
    from gateway.tools.top import run_top

    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(run_top(args.url, once=args.once, config=args.config))
    except ConfigError as exc:
        return _report(exc)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from gateway.tools.demo import run_demo

    os.umask(UMASK)   # the demo's state, broker and InfluxDB data: this user's only
    return run_demo(data_dir=args.data_dir, duration=args.duration)


if __name__ == "__main__":
    raise SystemExit(main())
