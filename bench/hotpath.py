"""CPU per message of the gateway's hot path, stage by stage, on the peer benchmark's load.

    .venv/bin/python -m bench.hotpath [--devices 100] [--messages 150000] [--repeats 3]

Devices of the five kinds of ``bench.peer``, its canonical payloads, 20 messages/s per device
as in its saturated runs, through the real :class:`Validator` and the real rule engine with the
default rule pack. The defaults span 75 s of readings, so windowed rules (a 60 s rate of
change) hold as much as they do in a long run. No broker, no disk: this isolates what ``bench.peer``
measures end to end, so a change to decoding or to the rules shows up here in a minute, on a
quiet machine or not (process CPU time, best of ``--repeats``).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.peer import devices
from gateway.ingest.validate import Validated, Validator
from rules.engine import Engine
from rules.loader import load_rules
from rules.observation import Observation
from sensors.registry import Registry, build_registry

ROOT = Path(__file__).resolve().parent.parent


def registry(n: int) -> Registry:
    rows = [(i + 1, {"device": d.device, "park": "bp", "building": d.building, "floor": "1",
                     "zone": "z", "kind": d.kind, "report_interval_s": 1})
            for i, d in enumerate(devices(n))]
    return build_registry(rows, source="bench")


def load(n_devices: int, total: int, start_s: float) -> list[tuple[str, bytes, int]]:
    """(topic, payload, received ms): round-robin at 20 msgs/s per device, as the peer sends."""
    devs = devices(n_devices)
    step_s = 1.0 / (20 * n_devices)
    out = []
    for i in range(total):
        d = devs[i % n_devices]
        ts = start_s + i * step_s
        payload = (b'{"ts":%.3f,"seq":%d,"values":{%s},"battery_pct":87.5,"rssi_dbm":-71}'
                   % (ts, i // n_devices, d.values.encode()))
        out.append((f"bench/bp/{d.building}/{d.device}/telemetry", payload, int(ts * 1000) + 2))
    return out


def best(repeats: int, run: Callable[[], None]) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.process_time()
        run()
        times.append(time.process_time() - t0)
    return min(times)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--messages", type=int, default=150_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    reg = registry(args.devices)
    msgs = load(args.devices, args.messages, time.time() - 600)
    validator = Validator(registry=reg, root="bench", timezones={},
                          default_timezone=ZoneInfo("Asia/Shanghai"), max_payload_bytes=65536,
                          max_age_s=7 * 86400, max_future_s=300)
    accepted: list[Validated] = []

    def validate() -> None:
        accepted.clear()
        for topic, payload, rx in msgs:
            accepted.append(validator.validate(topic, payload, rx))
    t_validate = best(args.repeats, validate)

    rules = load_rules(ROOT / "config" / "rules")
    observed: list[Observation] = [o for v in accepted for o in v.observations]
    now = msgs[-1][2] + 10

    def engine() -> None:
        counter = iter(range(10**9))
        eng = Engine(rules=rules, registry=reg, lateness_s=3600,
                     new_id=lambda: f"a{next(counter)}")
        for obs in observed:
            eng.observe(obs, now)
    t_engine = best(args.repeats, engine)
    n = len(msgs)
    print(f"bench.hotpath: {n} messages, {args.devices} devices, {len(rules.rules)} rules, "
          f"best of {args.repeats} (process CPU)")
    print(f"  Validator.validate   {1e6 * t_validate / n:6.2f} µs/msg")
    print(f"  Engine.observe       {1e6 * t_engine / n:6.2f} µs/msg")
    print(f"  together             {1e6 * (t_validate + t_engine) / n:6.2f} µs/msg "
          f"(one core: {n / (t_validate + t_engine):,.0f} msgs/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
