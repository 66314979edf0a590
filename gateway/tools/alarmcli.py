"""``parkwatch alarms list|show|ack|reclassify|history``, ``parkwatch maintenance
set|clear|list``.

Thin clients of a running gateway's HTTP API (:mod:`gateway.http.alarmapi`); a sync HTTP client is
enough for one request per command. Exit codes: 0 ok, 1 not found / conflict / gateway error,
2 usage (including a request the gateway rejected as bad), 3 gateway unreachable.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import re
import sys
import time
import unicodedata
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from gateway.errors import CodedError
from gateway.http.auth import client_headers
from gateway.notify.templates import DISPOSITION_NAMES, RULE_NAMES, SEVERITY_NAMES, STATE_NAMES
from rules.alarm import iso
from sensors.errors import ConfigError
from sensors.text import BEYOND_C0_RE, CONTROL_RE

DEFAULT_URL = "http://127.0.0.1:8080"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
_TIMEOUT_S = 10.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MESSAGE_WIDTH = 60
# The gateway is usually on loopback or the plant LAN: never route it through an HTTP proxy
# picked up from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class CliError(CodedError):
    """Printed as ``parkwatch: message``; the command exits with ``code``."""


_Handler = Callable[[argparse.Namespace], int]


def _reported(handler: _Handler) -> _Handler:
    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CliError as exc:
            print(f"parkwatch: {safe(exc.message)}", file=sys.stderr)
            return exc.code
    return run


# --- HTTP ----------------------------------------------------------------------------------------

def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    return call(args.url, method, path, config=args.config, **kwargs)


def auth_headers(config: Path | None) -> dict[str, str]:
    """The token header (env, ``--config``, else the state directory's generated token)."""
    try:
        return client_headers(config=config)
    except ConfigError as exc:
        raise CliError(EXIT_USAGE, "; ".join(exc.problems) or str(exc)) from None


def call(base_url: str, method: str, path: str, *, query: Mapping[str, Any] | None = None,
         body: Mapping[str, Any] | None = None, config: Path | None = None) -> Any:
    """The decoded JSON answer, or CliError with the exit code the status calls for."""
    params = {k: v for k, v in (query or {}).items() if v is not None}
    url = base_url.rstrip("/") + path + ("?" + urlencode(params) if params else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json",
                                              **auth_headers(config)})
    try:
        with _OPENER.open(request, timeout=_TIMEOUT_S) as response:
            raw = response.read()
        return json.loads(raw)
    except ValueError:
        raise CliError(EXIT_FAILED, f"{url} did not answer JSON: is it a ParkWatch gateway?"
                       ) from None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            message = str(json.loads(raw)["error"])
        except (ValueError, KeyError, TypeError):
            message = raw.decode(errors="replace").strip() or exc.reason
        if exc.code == 401:
            message += ("; set PARKWATCH_HTTP__TOKEN to the gateway's http.token, or pass "
                        "--config (or PARKWATCH_STATE_DIR) so the generated token is found")
        code = EXIT_USAGE if exc.code == 400 else EXIT_FAILED
        raise CliError(code, f"{message} (HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(EXIT_UNREACHABLE,
                       f"cannot reach the gateway at {base_url}: {reason}") from None


# --- times ---------------------------------------------------------------------------------------

def parse_when(text: str, *, future: bool, now_s: float | None = None) -> int:
    """Epoch ms from ``24h`` / ``7d`` / ``30m`` (before now, or after it when ``future``), a date
    or date-time (local time unless it has a zone) or epoch ms."""
    now = time.time() if now_s is None else now_s
    text = text.strip()
    m = _DURATION.match(text)
    if m:
        delta = float(m.group(1)) * _UNIT_S[m.group(2)]
        return int((now + delta if future else now - delta) * 1000)
    if text.isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise CliError(EXIT_USAGE, f"{text!r} is not a duration like 24h / 7d / 30m, a date "
                                   f"like 2026-11-25 or a date-time") from None
    return int(when.astimezone().timestamp() * 1000)  # a naive time is taken as local


def _local(stamp: str | None) -> str:
    if not stamp:
        return "-"
    return dt.datetime.fromisoformat(stamp).astimezone().strftime("%m-%d %H:%M")


# --- output --------------------------------------------------------------------------------------

def _visible(m: re.Match[str]) -> str:
    return m.group(0).encode("unicode_escape").decode("ascii")


def safe(value: Any) -> str:
    """A field from the gateway as terminal-safe text: whatever a device or an older gateway
    put in it, control characters and bidi overrides are printed as escapes (``\\x1b``), so
    no field can clear the screen, move the cursor or reorder a line."""
    return CONTROL_RE.sub(_visible, str(value))


def _cells(text: str) -> int:
    """Terminal columns: a Chinese character takes two, so zh-CN tables stay aligned."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    rows = [[safe(c) for c in row] for row in rows]
    widths = [max(_cells(h), *(_cells(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(c + " " * (w - _cells(c)) for c, w in zip(row, widths, strict=True)
                       ).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def _where(doc: Mapping[str, Any]) -> str:
    return "/".join(p for p in (doc.get("building"), doc.get("zone"), doc.get("device")) if p)


def _short(text: str) -> str:
    return text if len(text) <= _MESSAGE_WIDTH else text[:_MESSAGE_WIDTH - 1] + "…"


def _zh(table: Mapping[str, tuple[str, str]], key: Any, lang: str) -> str:
    """The word the messages use (gateway/notify/templates.py) in zh-CN; the raw value in en."""
    return table.get(str(key), (str(key), ""))[0] if lang == "zh-CN" else str(key)


def _ack_cell(doc: Mapping[str, Any], lang: str = "en") -> str:
    by = doc.get("acknowledged_by")
    if not by:
        return "-"
    disposition = doc.get("disposition")
    return f"{by} ({_zh(DISPOSITION_NAMES, disposition, lang)})" if disposition else str(by)


_HEADERS = {
    "en": ["SEVERITY", "STATE", "SINCE", "WHERE", "RULE", "MESSAGE", "ACK", "ID"],
    "zh-CN": ["级别", "状态", "开始时间", "位置", "类型", "详情", "响应", "编号"],
}


def alarm_table(docs: Sequence[Mapping[str, Any]], lang: str = "en") -> str:
    """The alarm list; zh-CN speaks as the messages do (特急, 已响应, 复合火警, 属实)."""
    if not docs:
        return "无告警" if lang == "zh-CN" else "no alarms"
    rows = [[_zh(SEVERITY_NAMES, d["severity"], lang), _zh(STATE_NAMES, d["state"], lang),
             _local(d.get("fired_at") or d.get("started_at")), _where(d),
             _zh(RULE_NAMES, d["rule"], lang), _short(d.get("message", "")),
             _ack_cell(d, lang), d["alarm_id"]]
            for d in docs]
    return _table(_HEADERS[lang], rows)


def _print_json(data: Any) -> None:
    # json escapes C0 already; DEL, C1 (0x9b is an 8-bit CSI) and bidi overrides it leaves raw.
    text = json.dumps(data, indent=2, ensure_ascii=False)
    print(BEYOND_C0_RE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text))


# --- alarms --------------------------------------------------------------------------------------

def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {"park": args.park, "building": args.building, "device": args.device,
            "rule": args.rule, "severity": args.severity, "tenant": args.tenant,
            "limit": args.limit}


def _show_list(args: argparse.Namespace, query: dict[str, Any]) -> int:
    docs = _call(args, "GET", "/alarms", query=query)
    if args.json:
        _print_json(docs)
    else:
        print(alarm_table(docs, args.lang))
    return EXIT_OK


@_reported
def _cmd_list(args: argparse.Namespace) -> int:
    state = "all" if args.all else args.state
    return _show_list(args, {"state": state, **_filters(args)})


@_reported
def _cmd_history(args: argparse.Namespace) -> int:
    query = {"state": args.state, **_filters(args),
             "since": parse_when(args.since, future=False),
             "until": parse_when(args.until, future=False) if args.until else None}
    return _show_list(args, query)


@_reported
def _cmd_show(args: argparse.Namespace) -> int:
    doc = _call(args, "GET", f"/alarms/{quote(args.alarm_id, safe='')}")
    if args.json:
        _print_json(doc)
        return EXIT_OK
    history = doc.pop("history", [])
    changes = doc.pop("reclassifications", [])
    width = max(len(k) for k in doc)
    for key, value in doc.items():
        if value not in (None, ""):
            print(f"{safe(key).ljust(width)}  {safe(value)}")
    print("\nhistory:")
    rows = [[str(h.get("seq", "")), _local(h.get("at")),
             f"{h.get('from_state') or 'new'} → {h.get('to_state')}", str(h.get("severity", "")),
             _ack_cell(h), _short(str(h.get("message", "")))] for h in history]
    print(_table(["#", "AT", "CHANGE", "SEVERITY", "ACK", "MESSAGE"], rows) if rows
          else "  (none)")
    if changes:
        print("\nreclassifications:")
        print(_table(["AT", "BY", "CHANGE", "REASON"],
                     [[_local(c.get("at")), str(c.get("by", "")),
                       f"{c.get('from_disposition') or '-'} → {c.get('to_disposition')}",
                       str(c.get("reason", ""))] for c in changes]))
    return EXIT_OK


@_reported
def _cmd_ack(args: argparse.Namespace) -> int:
    doc = _call(args, "POST", f"/alarms/{quote(args.alarm_id, safe='')}/ack",
               body={"by": args.by, "disposition": args.disposition, "channel": "cli"})
    print(safe(f"acknowledged {doc['alarm_id']} ({doc['rule']} at {_where(doc)}) "
               f"as {doc['disposition']} by {doc['acknowledged_by']}"))
    return EXIT_OK


@_reported
def _cmd_reclassify(args: argparse.Namespace) -> int:
    doc = call(args.url, "POST", f"/alarms/{quote(args.alarm_id, safe='')}/reclassify",
               body={"by": args.by, "disposition": args.disposition, "reason": args.reason})
    print(f"reclassified {doc['alarm_id']} ({doc['rule']} at {_where(doc)}) "
          f"as {doc['disposition']} by {args.by}")
    return EXIT_OK


# --- maintenance ---------------------------------------------------------------------------------

def _set_maintenance(args: argparse.Namespace, mode: str, until: str | None) -> int:
    until_iso = iso(parse_when(until, future=True)) if until else None
    done = _call(args, "POST", "/maintenance",
                body={"scope": args.scope, "target": args.target, "mode": mode,
                      "until": until_iso, "by": args.by})
    if mode == "none":
        print(safe(f"{done['scope']} {done['target']}: maintenance cleared by {done['by']}"))
    else:
        print(safe(f"{done['scope']} {done['target']}: {done['mode']} until "
                   f"{_local(done['until']) if done['until'] else 'cleared'} (by {done['by']})"))
    return EXIT_OK


@_reported
def _cmd_maint_set(args: argparse.Namespace) -> int:
    return _set_maintenance(args, args.mode, args.until)


@_reported
def _cmd_maint_clear(args: argparse.Namespace) -> int:
    return _set_maintenance(args, "none", None)


def _until_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return _local(iso(value))
    return _local(str(value))


@_reported
def _cmd_maint_list(args: argparse.Namespace) -> int:
    entries = _call(args, "GET", "/maintenance")
    if args.json:
        _print_json(entries)
    elif not entries:
        print("nothing under maintenance")
    else:
        rows = [[str(e.get("scope", "")), str(e.get("target", "")), str(e.get("mode", "")),
                 _until_cell(e.get("until", e.get("until_ms"))), str(e.get("by") or "-")]
                for e in entries]
        print(_table(["SCOPE", "TARGET", "MODE", "UNTIL", "BY"], rows))
    return EXIT_OK


# --- argparse ------------------------------------------------------------------------------------

def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=DEFAULT_URL, help=f"gateway HTTP address ({DEFAULT_URL})")
    common.add_argument("--config", "-c", type=Path, default=None,
                        help="the gateway's config: its token, or the token generated in its "
                             "state_dir (default: PARKWATCH_STATE_DIR, else var/parkwatch)")
    return common


def _filter_args(p: argparse.ArgumentParser) -> None:
    for name in ("park", "building", "device", "rule", "tenant"):
        p.add_argument(f"--{name}", help=f"only this {name}")
    p.add_argument("--severity", choices=["critical", "major", "minor", "warning", "info"])
    p.add_argument("--limit", type=int, default=500, help="at most this many (500)")
    p.add_argument("--json", action="store_true", help="print the JSON documents")
    p.add_argument("--lang", choices=["en", "zh-CN"], default="en",
                   help="table wording: en (raw values, for scripts) or zh-CN (the messages' "
                        "words: 特急, 已响应, 复合火警, 属实)")


def _add_alarms(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                common: argparse.ArgumentParser) -> None:
    alarms = sub.add_parser("alarms", help="list, show, acknowledge alarms of a running gateway")
    actions = alarms.add_subparsers(required=True, metavar="ACTION")
    ls = actions.add_parser("list", parents=[common], help="active alarms, worst first")
    which = ls.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="resolved ones too")
    which.add_argument("--state", choices=["active", "resolved", "all"], default="active")
    _filter_args(ls)
    ls.set_defaults(handler=_cmd_list)

    show = actions.add_parser("show", parents=[common], help="one alarm and its history")
    show.add_argument("alarm_id", metavar="ID")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=_cmd_show)

    ack = actions.add_parser("ack", parents=[common], help="acknowledge an alarm")
    ack.add_argument("alarm_id", metavar="ID")
    ack.add_argument("--by", required=True, help="who acknowledges (recorded)")
    ack.add_argument("--disposition", required=True,
                     choices=["real", "false_alarm", "test", "fault"])
    ack.set_defaults(handler=_cmd_ack)

    rec = actions.add_parser("reclassify", parents=[common],
                             help="correct the disposition of an acknowledged alarm (audited)")
    rec.add_argument("alarm_id", metavar="ID")
    rec.add_argument("--by", required=True, help="who corrects it (recorded)")
    rec.add_argument("--disposition", required=True,
                     choices=["real", "false_alarm", "test", "fault"])
    rec.add_argument("--reason", required=True, help="why (recorded, 1-500 characters)")
    rec.set_defaults(handler=_cmd_reclassify)

    hist = actions.add_parser("history", parents=[common],
                              help="alarms of a past period, newest first")
    hist.add_argument("--since", default="24h", help="24h, 7d, a date or date-time (24h)")
    hist.add_argument("--until", help="same forms; default now")
    hist.add_argument("--state", choices=["resolved", "all"], default="all")
    _filter_args(hist)
    hist.set_defaults(handler=_cmd_history)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scope", required=True, choices=["device", "zone", "building"])
    p.add_argument("--target", required=True,
                   help="device id; park/building/floor/zone for a zone; park/building")
    p.add_argument("--by", required=True, help="who (recorded)")


def _add_maintenance(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                     common: argparse.ArgumentParser) -> None:
    maint = sub.add_parser("maintenance", help="test / isolated modes of a running gateway")
    actions = maint.add_subparsers(required=True, metavar="ACTION")
    put = actions.add_parser("set", parents=[common], help="put a target under maintenance")
    _target_args(put)
    put.add_argument("--mode", required=True, choices=["test", "isolated"])
    put.add_argument("--until", help="expiry: 2h, 1d, a date or date-time (default: none)")
    put.set_defaults(handler=_cmd_maint_set)

    clear = actions.add_parser("clear", parents=[common], help="end maintenance of a target")
    _target_args(clear)
    clear.set_defaults(handler=_cmd_maint_clear)

    ls = actions.add_parser("list", parents=[common], help="what is under maintenance")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_cmd_maint_list)


def add_alarm_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``alarms`` and ``maintenance`` to the ``parkwatch`` subcommands; each leaf sets
    ``handler`` (``args -> exit code``)."""
    common = _common()
    _add_alarms(sub, common)
    _add_maintenance(sub, common)


def main(argv: Sequence[str] | None = None) -> int:
    """Run just these commands (tests, or before the main CLI wires them in)."""
    parser = argparse.ArgumentParser(prog="parkwatch")
    add_alarm_commands(parser.add_subparsers(required=True, metavar="COMMAND"))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: _Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
