"""``parkwatch uitd list`` and ``parkwatch uitd duty-check --panel fp-0001``: thin clients of a
running gateway's UITD API (gateway/http/uitdapi.py), like ``parkwatch alarms``.

``duty-check`` sends a 查岗 (command 91) and, with ``--wait``, polls until the UITD's duty
officer answered (type 24 bit 5), printing the request time and the answer time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gateway.tools.alarmcli import (
    DEFAULT_URL,
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    _reported,
    call,
)
from rules.alarm import iso


def _when(ms: Any) -> str:
    return iso(int(ms)) if isinstance(ms, int) else "-"


@_reported
def _cmd_list(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = call(args.url, "GET", "/uitd", config=args.config)
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    for r in rows:
        print(f"{r['address']}  {r['panel']:<10} {'up' if r['connected'] else 'down':<5} "
              f"last frame {_when(r['last_frame_ms'])}  duty check asked "
              f"{_when(r['duty_check_asked_ms'])} answered {_when(r['duty_check_answered_ms'])}")
    return EXIT_OK


@_reported
def _cmd_duty_check(args: argparse.Namespace) -> int:
    state = call(args.url, "POST", f"/uitd/{quote(args.panel, safe='')}/duty-check",
                 body={"by": args.by}, config=args.config)
    print(f"duty check sent to {args.panel} at {_when(state['duty_check_asked_ms'])}")
    if not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        rows = call(args.url, "GET", "/uitd", config=args.config)
        row = next((r for r in rows if r["panel"] == args.panel), None)
        if row is not None and row["duty_check_answered_ms"] is not None:
            asked, answered = row["duty_check_asked_ms"], row["duty_check_answered_ms"]
            print(f"answered at {_when(answered)} ({(answered - asked) / 1000:.0f} s)")
            return EXIT_OK
        time.sleep(1.0)
    raise CliError(EXIT_FAILED, f"no answer from {args.panel} within {args.wait:.0f} s")


def add_uitd_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help=f"gateway HTTP address ({DEFAULT_URL})")
    common.add_argument("--config", "-c", type=Path, default=None,
                        help="gateway config: where to find the API token (its state_dir)")
    uitd = sub.add_parser("uitd", help="UITDs (GB/T 26875.3) of a running gateway")
    actions = uitd.add_subparsers(required=True, metavar="ACTION")
    ls = actions.add_parser("list", parents=[common], help="mapped UITDs and their links")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_cmd_list)
    duty = actions.add_parser("duty-check", parents=[common],
                              help="send a duty check (查岗) to a panel's UITD")
    duty.add_argument("--panel", required=True, help="the fire_panel device, e.g. fp-0001")
    duty.add_argument("--by", default="cli", help="who asks (logged)")
    duty.add_argument("--wait", type=float, default=0.0,
                      help="seconds to wait for the answer (0: do not wait)")
    duty.set_defaults(handler=_cmd_duty_check)
