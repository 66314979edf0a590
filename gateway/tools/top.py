"""``parkwatch top``: a live terminal view of a running gateway, read from its ``/status``.

Shows message rates, rejections by reason and the latest readings; refreshes every second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from gateway.http.auth import client_headers

CLEAR = "\x1b[H\x1b[2J"


async def run_top(url: str, *, once: bool = False, interval: float = 1.0,
                  config: Path | None = None) -> int:
    """``config`` finds the token as ``parkwatch alarms --config`` does; ConfigError if bad."""
    previous: tuple[float, dict[str, Any]] | None = None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3),
                                     headers=client_headers(config=config)) as http:
        while True:
            try:
                async with http.get(f"{url.rstrip('/')}/status") as resp:
                    if resp.status == 401:
                        sys.stdout.write(f"{url} wants a token: set PARKWATCH_HTTP__TOKEN or "
                                         "pass --config\n")
                        return 1
                    status: dict[str, Any] = await resp.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                name = exc.__class__.__name__
                sys.stdout.write(f"{CLEAR}waiting for the gateway at {url} ({name})\n")
                sys.stdout.flush()
                if once:
                    return 1
                await asyncio.sleep(interval)
                continue
            now = time.monotonic()
            frame = render(status, previous, now)
            sys.stdout.write(frame if once else CLEAR + frame)
            sys.stdout.flush()
            if once:
                return 0
            previous = (now, status)
            await asyncio.sleep(interval)


def _total(section: dict[str, float]) -> float:
    return sum(section.values())


def render(status: dict[str, Any], previous: tuple[float, dict[str, Any]] | None,
           now: float) -> str:
    """One screen of text. Rates are differences between two successive /status reads."""
    width = shutil.get_terminal_size((100, 40)).columns
    health = status["health"]
    lines = [
        f"ParkWatch {status['instance']}  up {status['uptime_s']:.0f}s  "
        f"devices {status['devices']}  health {health['status'].upper()}  "
        f"broker {'up' if health['broker_connected'] else 'DOWN'}  "
        f"influx {'up' if health['influx_reachable'] else 'DOWN'}  "
        f"wal backlog {health['wal_pending_bytes']} B  unacked {health['unacked_in_flight']}",
        "",
    ]
    rates = {"received": 0.0, "accepted": 0.0, "rejected": 0.0, "written": 0.0}
    if previous is not None:
        then, old = previous
        dt_s = max(now - then, 1e-3)
        rates["received"] = (_total(status["received"]) - _total(old["received"])) / dt_s
        rates["accepted"] = (_total(status["accepted"]) - _total(old["accepted"])) / dt_s
        rates["rejected"] = (_total(status["rejected"]) - _total(old["rejected"])) / dt_s
        rates["written"] = (status["points_written"] - old["points_written"]) / dt_s
    lines.append("rates/s   " + "   ".join(f"{k} {v:8.1f}" for k, v in rates.items()))
    lines.append("totals    " + f"received {_total(status['received']):.0f}   accepted "
                 f"{_total(status['accepted']):.0f}   rejected {_total(status['rejected']):.0f}"
                 f"   points written {status['points_written']:.0f}")
    lines.append("")
    rejects = {k: v for k, v in status["rejected"].items() if v}
    lines.append("rejected by reason: " + (", ".join(f"{k} {v:.0f}" for k, v in
                                                    sorted(rejects.items())) or "none"))
    if status.get("untrusted_clock_devices"):
        lines.append("untrusted device clocks: " + ", ".join(status["untrusted_clock_devices"]))
    lines.append("")
    alarms = status.get("alarms", [])
    lines.append(f"active alarms: {len(alarms)}" + ("" if alarms else " (none)"))
    for a in alarms[:10]:
        since = dt.datetime.fromtimestamp(a["since_ms"] / 1000, tz=dt.UTC).strftime("%H:%M:%S")
        mark = "" if a["paged"] else " (not paged)"
        lines.append(f"  {a['severity'].upper():<8} {a['state']:<12} {a['rule']:<24} "
                     f"{a['building']:<4} {a['where']:<10} since {since}{mark}"[:width - 1])
    lines.append("")
    lines.append(f"{'device':<10} {'kind':<18} {'bldg':<5} {'time (UTC)':<13} values")
    for row in status["latest"][:15]:
        ts = dt.datetime.fromtimestamp(row["ts_ms"] / 1000, tz=dt.UTC).strftime("%H:%M:%S.%f")[:12]
        values = " ".join(f"{k}={_fmt(v)}" for k, v in row["values"].items())
        lines.append(f"{row['device']:<10} {row['kind']:<18} {row['building']:<5} {ts:<13} "
                     f"{values}"[:width - 1])
    lines.append("")
    lines.append("Ctrl-C to stop")
    return "\n".join(lines) + "\n"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
