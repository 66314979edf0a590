"""Cost of the rule engine: every default rule, 10k devices, realistic traffic.

    .venv/bin/python -m bench.rules [--devices 10000] [--messages 200000] [--record]

The registry is the sample park replicated until it has ``--devices`` devices (same kinds, same
mix, new IDs and buildings); traffic comes from the simulator (canonical and vendor shapes,
batches, events), decoded by the real validator, so the engine sees what it sees in production.
Reports µs per message for ``Engine.observe`` (mean and p99 of per-message calls), the ``tick``
cost for all devices, and messages/s the engine alone could take.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.ingest.validate import Validator
from gateway.tools.simulator.runner import iter_messages
from rules.engine import Engine
from rules.loader import load_rules
from rules.observation import Observation
from sensors.base import Rejection
from sensors.registry import Registry, build_registry, load_registry

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")


def replicated_registry(devices: int) -> Registry:
    """The sample park, copied building by building until it has ``devices`` devices."""
    sample = list(load_registry(ROOT / "config" / "sample-park" / "registry.yaml"))
    rows: list[tuple[int, dict[str, object]]] = []
    copy = 0
    while len(rows) < devices:
        for d in sample:
            if len(rows) >= devices:
                break
            row = d.model_dump(exclude_none=True)
            row["device"] = f"{d.device}-{copy}"
            row["building"] = f"{d.building}c{copy}"
            rows.append((len(rows) + 1, row))
        copy += 1
    return build_registry(rows, source="bench")


def observations(registry: Registry, total: int) -> list[tuple[int, Sequence[Observation]]]:
    validator = Validator(registry=registry, root="parks", timezones={},
                    default_timezone=ZoneInfo("Asia/Shanghai"), max_payload_bytes=65536,
                    max_age_s=7 * 86400, max_future_s=300)
    start = time.time() - 600
    out: list[tuple[int, Sequence[Observation]]] = []
    for at, msg in iter_messages(registry, scenarios=("normal", "fire", "pipe-burst",
                                                      "electrical-fault"),
                                 start_ts=start, rate=5000.0, count=total,
                                 include_status=False):
        received = int((start + at) * 1000)
        try:
            validated = validator.validate(msg.topic, msg.payload, received)
        except Rejection:
            continue
        out.append((received, validated.observations))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    registry = replicated_registry(args.devices)
    ruleset = load_rules(ROOT / "config" / "rules")
    print(f"bench.rules: {len(ruleset.rules)} rules, {len(registry)} devices; generating "
          f"{args.messages} messages", flush=True)
    work = observations(registry, args.messages)
    counter = iter(range(10**9))
    engine = Engine(rules=ruleset, registry=registry, lateness_s=3600,
                    new_id=lambda: f"a{next(counter)}")
    per_call: list[float] = []
    transitions = 0
    gc.collect()
    started = time.perf_counter()
    for received, obs in work:
        t0 = time.perf_counter()
        for o in obs:
            transitions += len(engine.observe(o, received))
        per_call.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    last = work[-1][0] if work else 0
    tick_times = []
    for i in range(20):
        t0 = time.perf_counter()
        transitions += len(engine.tick(last + (i + 1) * 1000))
        tick_times.append(time.perf_counter() - t0)
    per_call.sort()
    report = "\n".join([
        f"### {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} — rule engine, "
        f"{len(ruleset.rules)} default rules, {len(registry)} devices",
        f"`python -m bench.rules --devices {args.devices} --messages {args.messages}`",
        "",
        "| measure | value |",
        "|---|---|",
        f"| messages evaluated | {len(work)} ({transitions} alarm transitions) |",
        f"| `observe` per message, mean / p50 / p99 | {1e6 * elapsed / len(work):.1f} / "
        f"{1e6 * statistics.median(per_call):.1f} / "
        f"{1e6 * per_call[int(len(per_call) * 0.99)]:.1f} µs |",
        f"| engine alone | {len(work) / elapsed:,.0f} msg/s on one core |",
        f"| `tick` over all devices, mean | {1e3 * statistics.mean(tick_times):.1f} ms |",
        f"| active alarms at the end | {len(engine.active())} |",
        "",
    ])
    print(report)
    if args.record:
        with RESULTS.open("a") as fh:
            fh.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

