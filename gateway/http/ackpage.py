"""The minimal mobile page behind an ack link (docs/notifications.md, Acknowledge links)::

    GET  /ack/{token}   what, where, since when, current state; a form to acknowledge
    POST /ack/{token}   form: disposition=real|false_alarm|test|fault, name=… (optional)

The token is the capability (see :mod:`gateway.alarms.acklinks`): a bad token gets a page that
says so and nothing about any alarm (404 unknown / forged / malformed, 410 expired / used).
``GET`` never changes anything (IM apps and mail scanners fetch links to preview them); only a
``POST`` acknowledges, recording who (always the token's contact; a name typed on the form is
kept apart as unverified), the disposition and the token's channel, and then uses the token up.
An alarm is acknowledged once: a later link gets a 409 page saying who answered, when and how.
A ``POST`` whose ``Origin`` header is present must come from this site. Pages are
self-contained HTML (inline CSS, no scripts, no external assets), zh-CN and English,
everything escaped, and served with headers that forbid caching, framing and leaking the URL.

Both routes are throttled per client address (:mod:`gateway.http.throttle`, 429 with
``Retry-After``), and a token that was never issued is refused without the alarm store
(:meth:`AckLinks.verify`), so guessing costs the gateway next to nothing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import logging
import weakref
from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from aiohttp import web

from gateway.alarms.acklinks import AckGrant, AckLinks, AckProblem, AckTokenError
from gateway.http.throttle import ClientThrottle, client_key
from gateway.notify.templates import (
    DISPOSITION_NAMES,
    NO_NAMES,
    RULE_NAMES,
    SEVERITY_NAMES,
    STATE_NAMES,
    PlaceNames,
)
from rules.alarm import Alarm, AlarmState, AlreadyAcknowledged, Disposition, Severity

log = logging.getLogger(__name__)



class AckService(Protocol):
    """The part of :class:`gateway.http.alarmapi.AlarmService` the page uses (any fits)."""

    async def get_alarm(self, alarm_id: str) -> Alarm | None: ...

    async def acknowledge(self, alarm_id: str, *, by: str, disposition: Disposition,
                          channel: str, name: str | None = None) -> Alarm:
        """The acknowledged alarm; KeyError if unknown, AlreadyAcknowledged if someone already
        did, ValueError if it cannot be acked."""
        ...


TzSource = dt.tzinfo | Callable[[str], dt.tzinfo]   # one zone, or one per park

MAX_NAME_CHARS = 100
# A person opens a link and presses a button; previews add a few fetches. A whole shift behind
# one address still fits, while guessing is held to a few tries a minute.
ACK_BURST = 20
ACK_RATE_PER_S = 0.5

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "X-Robots-Tag": "noindex, nofollow",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
}

# The messages' words (gateway/notify/templates.py), so a page never contradicts its SMS: the
# fire-safety scale 特急/紧急/一般/提示/信息, and 已响应 (确认 means verified on site).
_SEVERITY = {s: (SEVERITY_NAMES[s.value][0], s.value) for s in Severity}
_STATE = {AlarmState.PENDING: ("待定", "pending"), AlarmState.FIRING: ("告警中", "firing"),
          AlarmState.ACKNOWLEDGED: (STATE_NAMES["acknowledged"][0], "acknowledged"),
          AlarmState.RESOLVED: ("已恢复", "resolved")}
# 属实: the alarm was true, whatever it was (fire, gas, leakage, a fault); not 真实火警/故障.
_DISPOSITION = {d: DISPOSITION_NAMES[d.value] for d in Disposition}
_PROBLEM = {
    AckProblem.EXPIRED: ("链接已过期", "This link has expired.",
                         "请在告警平台或通过值班人员响应。",
                         "Please acknowledge in the alarm console or through the duty officer."),
    AckProblem.USED: ("链接已使用", "This link has already been used.",
                      "每个响应链接只能使用一次。", "Each acknowledgement link works only once."),
}
_NOT_FOUND = ("链接无效", "This link is not valid.", "请检查链接是否完整。",
              "Check that the whole link was copied.")

_CSS = """
*{box-sizing:border-box}body{margin:0;font:16px/1.45 -apple-system,"PingFang SC",
"Microsoft YaHei",system-ui,sans-serif;background:#f3f4f6;color:#111}
main{max-width:32rem;margin:0 auto;padding:1rem}
h1{font-size:1.3rem;margin:.2rem 0 .8rem}.en{color:#555;font-size:.9em}
.card{background:#fff;border-radius:.6rem;padding:1rem;margin-bottom:1rem;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
.sev{display:inline-block;padding:.1rem .5rem;border-radius:.3rem;color:#fff;background:#6b7280}
.sev-critical{background:#b91c1c}.sev-major{background:#c2410c}.sev-minor{background:#b45309}
.sev-warning{background:#a16207}
dl{margin:0}dt{font-weight:600;margin-top:.6rem}dd{margin:0;word-break:break-word}
.msg{font-size:1.1rem;font-weight:600;word-break:break-word}
label{display:block;font-weight:600;margin:.4rem 0}
input[type=text]{width:100%;font-size:1rem;padding:.6rem;border:1px solid #9ca3af;
border-radius:.4rem}
button{display:block;width:100%;font-size:1.05rem;padding:.8rem;margin-top:.6rem;border:0;
border-radius:.5rem;color:#fff;background:#374151}
button.real{background:#b91c1c}
.ok{border-left:.4rem solid #15803d}.bad{border-left:.4rem solid #b91c1c}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _bi(zh: str, en: str) -> str:
    """A bilingual label: Chinese first, English after it."""
    return f'{_e(zh)} <span class="en">{_e(en)}</span>'


def _page(title_zh: str, title_en: str, body: str, *, status: int) -> web.Response:
    text = ("<!doctype html>\n"
            '<html lang="zh-CN"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            '<meta name="robots" content="noindex,nofollow">'
            '<meta name="referrer" content="no-referrer">'
            f"<title>{_e(title_zh)} · {_e(title_en)} · ParkWatch</title>"
            f"<style>{_CSS}</style></head><body><main>"
            f"<h1>{_bi(title_zh, title_en)}</h1>{body}</main></body></html>\n")
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers=_HEADERS)


def _message_page(title: tuple[str, str], lines: tuple[str, str], *, status: int,
                  ok: bool = False) -> web.Response:
    body = (f'<div class="card {"ok" if ok else "bad"}"><p>{_e(lines[0])}</p>'
            f'<p class="en">{_e(lines[1])}</p></div>')
    return _page(title[0], title[1], body, status=status)


def _refused_page(problem: AckProblem) -> web.Response:
    """The page for a refused token: never anything about an alarm."""
    if problem.gone:
        zh, en, line_zh, line_en = _PROBLEM[problem]
        return _message_page((zh, en), (line_zh, line_en), status=410)
    zh, en, line_zh, line_en = _NOT_FOUND
    return _message_page((zh, en), (line_zh, line_en), status=404)


class _Renderer:
    def __init__(self, tz: TzSource, now_ms: Callable[[], int],
                 places: PlaceNames = NO_NAMES) -> None:
        self._tz = tz
        self._now_ms = now_ms
        self._places = places

    def zone(self, park: str) -> dt.tzinfo:
        return self._tz if isinstance(self._tz, dt.tzinfo) else self._tz(park)

    def time(self, ms: int | None, park: str) -> str:
        if ms is None:
            return "—"
        local = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).astimezone(self.zone(park))
        return local.strftime("%Y-%m-%d %H:%M:%S UTC%z")

    def since(self, ms: int) -> str:
        minutes = max(0, (self._now_ms() - ms) // 60_000)
        if minutes < 60:
            return f"{minutes} 分钟前 · {minutes} min ago"
        hours, minutes = divmod(minutes, 60)
        return f"{hours} 小时 {minutes} 分钟前 · {hours} h {minutes} min ago"

    def details(self, alarm: Alarm) -> str:
        s = alarm.subject
        sev_zh, sev_en = _SEVERITY.get(alarm.severity, (alarm.severity, alarm.severity))
        state_zh, state_en = _STATE.get(alarm.state, (alarm.state, alarm.state))
        # Where someone must go: building, floor, zone, the tenant whose premises it is, and
        # the location (a panel point's own, from the point map) on the next line.
        # Display names where the registry and the tenant register have them: the person at
        # the door knows 3号厂房 and the company's name, not b3 and hs-elec.
        building, floor, zone = self._places.names(
            {"park": s.park, "building": s.building, "floor": s.floor, "zone": s.zone})
        tenant = s.tenant and (self._places.tenants.get(s.tenant)
                               or f"租户 tenant {s.tenant}")
        where = " / ".join(p for p in (s.park, building or s.building,
                                       floor or (s.floor and f"{s.floor}F"), zone or s.zone,
                                       tenant) if p)
        since_ms = alarm.fired_at_ms if alarm.fired_at_ms is not None else alarm.started_at_ms
        rows = [
            (("位置", "Where"), f"{_e(where)}" + (f"<br>{_e(s.location)}" if s.location else "")),
            (("设备", "Device"), _e(s.device or s.kind or "—")),
            (("规则", "Rule"), _bi(RULE_NAMES.get(alarm.rule, (alarm.rule, ""))[0], alarm.rule)),
            (("开始时间", "Since"),
             f"{_e(self.time(since_ms, s.park))}<br>{_e(self.since(since_ms))}"),
            (("当前状态", "State"), _bi(state_zh, state_en)),
        ]
        if alarm.value is not None:
            rows.insert(2, (("读数", "Value"), _e(f"{alarm.value:g}")))
        if alarm.acknowledged_by is not None:
            rows.append((("响应人", "Acknowledged by"),
                         f"{_e(alarm.acknowledged_by)} · {_e(alarm.ack_channel or '')} · "
                         f"{_e(self.time(alarm.acknowledged_at_ms, s.park))}"))
        if alarm.acknowledged_name is not None:
            rows.append((("填写姓名（未核实）", "Name given (unverified)"),
                         _e(alarm.acknowledged_name)))
        if alarm.resolved_at_ms is not None:
            rows.append((("恢复时间", "Resolved at"), _e(self.time(alarm.resolved_at_ms, s.park))))
        items = "".join(f"<dt>{_bi(*label)}</dt><dd>{value}</dd>" for label, value in rows)
        return (f'<div class="card"><p><span class="sev sev-{_e(alarm.severity)}">'
                f"{_bi(sev_zh, sev_en)}</span></p>"
                f'<p class="msg">{_e(alarm.message)}</p><dl>{items}</dl></div>')


def _ackable(alarm: Alarm) -> bool:
    """The service accepts an ack for an unacknowledged alarm, even a resolved one (a cleared
    alarm still needs a human verdict); the form is offered exactly then."""
    return not alarm.acknowledged and alarm.state is not AlarmState.PENDING


def _form(token: str, grant: AckGrant) -> str:
    buttons = "".join(
        f'<button type="submit" name="disposition" value="{_e(d.value)}"'
        f'{" class=real" if d is Disposition.REAL else ""}>{_bi(*_DISPOSITION[d])}</button>'
        for d in Disposition)
    return (f'<form class="card" method="post" action="/ack/{_e(token)}">'
            f'<label for="name">{_bi("响应人姓名（可选）", "Your name (optional)")}</label>'
            f'<input type="text" id="name" name="name" maxlength="{MAX_NAME_CHARS}"'
            f' autocomplete="name" placeholder="{_e(grant.contact)}">'
            f'<p>{_bi("响应并标记为：", "Acknowledge as:")}</p>{buttons}</form>')


def _origin_ok(request: web.Request, links: AckLinks) -> bool:
    """No Origin header (older clients) is fine: the token is the capability. A present one must
    name this site, as the browser reached it (Host) or as the links advertise it (base_url)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    if not parts.scheme or not parts.netloc:
        return False  # "null" (sandboxed or cross-origin redirect) and garbage
    base = urlsplit(links.base_url)
    return (parts.netloc.lower() == request.host.lower()
            or (parts.scheme, parts.netloc.lower()) == (base.scheme, base.netloc.lower()))


_DISPOSITION_VALUES = frozenset(d.value for d in Disposition)
_BAD_FORM = (("请求无效", "Bad request"), ("请选择一种处置结果。", "Choose one of the buttons."))
_GONE_ALARM = (("告警不存在", "Alarm not found"),
               ("该告警已不存在。", "This alarm no longer exists."))


def _parse_form(form: object) -> tuple[Disposition, str] | None:
    """``(disposition, name)`` from the posted form, None if unusable."""
    get = getattr(form, "get", None)
    if get is None:
        return None
    raw_disposition, raw_name = get("disposition"), get("name")
    if not isinstance(raw_disposition, str) or raw_disposition not in _DISPOSITION_VALUES:
        return None
    name = " ".join(raw_name.split()) if isinstance(raw_name, str) else ""
    if len(name) > MAX_NAME_CHARS:
        return None
    return Disposition(raw_disposition), name


_THROTTLED = (("请求过于频繁", "Too many requests"),
              ("请稍后再试。", "Please wait a moment and try again."))


class _AckRoutes:
    def __init__(self, links: AckLinks, service: AckService, tz: TzSource,
                 throttle: ClientThrottle, places: PlaceNames) -> None:
        self.links = links
        self.service = service
        self.throttle = throttle
        self.render = _Renderer(tz, links.now_ms, places)
        # One POST per token at a time, so "verify, acknowledge, consume" cannot interleave.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary())

    def _throttled(self, request: web.Request) -> web.Response | None:
        wait = self.throttle.retry_after(client_key(request))
        if not wait:
            return None
        response = _message_page(*_THROTTLED, status=429)
        response.headers["Retry-After"] = str(wait)
        return response

    async def show(self, request: web.Request) -> web.Response:
        if (refused := self._throttled(request)) is not None:
            return refused
        token = request.match_info["token"]
        try:
            grant = await self.links.verify(token)
        except AckTokenError as exc:
            return _refused_page(exc.problem)
        alarm = await self.service.get_alarm(grant.alarm_id)
        if alarm is None:
            return _message_page(*_GONE_ALARM, status=404)
        body = self.render.details(alarm)
        if _ackable(alarm):
            body += _form(token, grant)
        else:
            body += ('<div class="card ok"><p>'
                     f'{_bi("无需再响应。", "Nothing left to acknowledge.")}</p></div>')
        return _page("消防告警", "Fire-safety alarm", body, status=200)

    async def acknowledge(self, request: web.Request) -> web.Response:
        if (refused := self._throttled(request)) is not None:
            return refused
        token = request.match_info["token"]
        if not _origin_ok(request, self.links):
            return _message_page(("请求被拒绝", "Request refused"),
                                 ("请直接在确认页面上提交。",
                                  "Submit the form on the acknowledgement page itself."),
                                 status=403)
        lock = self._locks.get(token)
        if lock is None:
            lock = self._locks[token] = asyncio.Lock()
        async with lock:
            return await self._acknowledge(request, token)

    async def _acknowledge(self, request: web.Request, token: str) -> web.Response:
        try:
            grant = await self.links.verify(token)
        except AckTokenError as exc:
            return _refused_page(exc.problem)
        parsed = _parse_form(await request.post())
        if parsed is None:
            return _message_page(*_BAD_FORM, status=400)
        disposition, name = parsed
        # The link vouches for its contact, not for what anyone types: that is kept apart.
        by = grant.contact
        try:
            alarm = await self.service.acknowledge(grant.alarm_id, by=by,
                                                   disposition=disposition,
                                                   channel=grant.channel, name=name or None)
        except KeyError:
            return _message_page(*_GONE_ALARM, status=404)
        except AlreadyAcknowledged as exc:
            return self._already(exc.alarm)
        except ValueError:
            return await self._conflict(grant)
        try:
            await self.links.consume(token)
        except AckTokenError as exc:  # expired in between: the acknowledgement stands
            log.info("ack link for alarm %s not consumed: %s", grant.alarm_id, exc.problem.value)
        log.info("alarm %s acknowledged through an ack link (channel %s, disposition %s)",
                 grant.alarm_id, grant.channel, disposition.value)
        dzh, den = _DISPOSITION[disposition]
        body = ('<div class="card ok"><p>'
                f'{_bi("已响应，谢谢。", "Acknowledged, thank you.")}</p>'
                f"<p>{_bi('处置：' + dzh, 'Disposition: ' + den)}</p>"
                f"<p>{_bi('响应人：' + by, 'By: ' + by)}</p>"
                + (f"<p>{_bi('填写姓名（未核实）：' + name, 'Name given (unverified): ' + name)}"
                   "</p>" if name else "")
                + "</div>" + self.render.details(alarm))
        return _page("已响应", "Acknowledged", body, status=200)

    def _already(self, first: Alarm) -> web.Response:
        """Someone answered first: say who, when and through which channel; change nothing."""
        park = first.subject.park
        who, via = first.acknowledged_by or "?", first.ack_channel or "?"
        when = self.render.time(first.acknowledged_at_ms, park)
        body = ('<div class="card bad"><p>'
                + _bi(f"该告警已由 {who} 于 {when} 通过 {via} 响应。",
                      f"Already acknowledged by {who} at {when} via {via}.")
                + "</p></div>" + self.render.details(first))
        return _page("已被响应", "Already acknowledged", body, status=409)

    async def _conflict(self, grant: AckGrant) -> web.Response:
        current = await self.service.get_alarm(grant.alarm_id)
        body = ('<div class="card bad"><p>'
                + _bi("该告警已被响应或无法响应。",
                      "This alarm was already acknowledged or can no longer be acknowledged.")
                + "</p></div>")
        if current is not None:
            body += self.render.details(current)
        return _page("无法响应", "Not acknowledged", body, status=409)


def add_ack_routes(app: web.Application, *, links: AckLinks, service: AckService,
                   tz: TzSource, throttle: ClientThrottle | None = None,
                   places: PlaceNames = NO_NAMES) -> None:
    """Serve ``/ack/{token}`` on ``app``; ``tz`` is one zone or ``park -> zone``; ``places``
    gives buildings, floors, zones and tenants their display names."""
    if throttle is None:
        throttle = ClientThrottle(rate_per_s=ACK_RATE_PER_S, burst=ACK_BURST)
    routes = _AckRoutes(links, service, tz, throttle, places)
    app.router.add_get("/ack/{token}", routes.show)
    app.router.add_post("/ack/{token}", routes.acknowledge)
