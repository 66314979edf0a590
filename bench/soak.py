"""Soak: the chaos suite of tests/test_chaos.py, bigger and longer, printing its numbers.

    .venv/bin/python -m bench.soak --devices 2000 --rounds 5

Each round injects every fault of tests/support/chaos.py once (kill -9, broker restart, network cut,
network stall, InfluxDB stopped with a kill -9 in the middle, InfluxDB link stalled while the
broker link is cut); after the last round it proves that nothing was lost or doubled. The exit
status is 0 only if the proof holds and the gateway recovered from every fault on its own.
Services run from a temporary directory (``--keep`` leaves it, with the gateway's log).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.support.chaos import Chaos, ChaosConfig, ChaosReport


def _parse(argv: list[str] | None) -> argparse.Namespace:
    defaults = ChaosConfig()
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=2000, help="telemetry devices")
    p.add_argument("--alarm-devices", type=int, default=60,
                   help="smoke detectors that raise (and later reset) fire alarms")
    p.add_argument("--rate", type=float, default=1000.0, help="telemetry messages/s in all")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--outage-s", type=float, default=defaults.influx_outage_s,
                   help="how long InfluxDB stays stopped in each round")
    p.add_argument("--stall-s", type=float, default=defaults.stall_s)
    p.add_argument("--settle-s", type=float, default=15.0,
                   help="steady traffic before each fault")
    p.add_argument("--keepalive-s", type=int, default=defaults.keepalive_s,
                   help="the gateway's MQTT keepalive (what notices a stall)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    return p.parse_args(argv)


async def _soak(chaos: Chaos) -> ChaosReport:
    async with chaos:
        return await chaos.run()


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    cfg = ChaosConfig(devices=args.devices, alarm_devices=args.alarm_devices, rate=args.rate,
                      rounds=args.rounds, influx_outage_s=args.outage_s, stall_s=args.stall_s,
                      settle_s=args.settle_s, keepalive_s=args.keepalive_s,
                      recover_timeout_s=300.0)
    workdir = Path(tempfile.mkdtemp(prefix="parkwatch-soak-"))
    print(f"soak: {args.devices} devices at {args.rate:g} msg/s, {args.rounds} round(s); "
          f"working directory {workdir}", flush=True)
    started = time.monotonic()
    chaos = Chaos(workdir, cfg, say=lambda line: print(line, flush=True))
    try:
        report = asyncio.run(_soak(chaos))
    finally:
        chaos.emergency_stop()   # a no-op after a clean run; Ctrl-C must not leave services
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(report.render())
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 0 if not report.problems else 1


if __name__ == "__main__":
    sys.exit(main())
