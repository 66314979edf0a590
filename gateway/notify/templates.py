"""Message wording per channel kind and language (pure: time zone and ack link are passed in).

``string.Template`` only: no Jinja, no ``eval``, nothing from the alarm is ever interpreted.
zh-CN is the default language, en the other one.

Every message says where: building, floor, zone, tenant and the location (for a fire-panel
point, the point map's location of that point). SMS is the tight one. Chinese carriers bill
UCS-2 SMS at 70 characters for one message and 67 per part once it is split (the rest carries
the concatenation header), so "two segments" is 134 characters, and the provider prepends the
approved signature (``【园区消防】``) which counts too. We count as UCS-2 does (a character outside
the BMP is a surrogate pair: 2) and shorten the text step by step — detail, park name, note,
tenant, zone, value — but never drop the location (it is cut only if it alone cannot fit) and
never cut the ack link.

Chinese messages are in Chinese only (issue 14): the wording is a fire-safety officer's
(复合火警, 已响应, 屏蔽, 防拆报警, 欠压/过压, the severity scale 特急/紧急/一般/提示/信息), the
building, floor and zone appear by their registry display names (:class:`PlaceNames`), and the
engine's English detail is replaced by a zh-CN text per rule (:data:`RULE_DETAILS_ZH`) or, for an
event, by what the device wrote. A fire SMS asks for action (请立即到场核实) before the link.

The alarm message carries what a device wrote (an event's ``point`` and ``detail``), so it is
shown quoted (「…」 / “…”) with its URLs and domain names defanged (``hxxp://``, ``evil[.]com``)
and, in IM markdown, escaped: a device cannot put a fake "acknowledge" link above the real one,
which stays the only link in a message. The registry's ``location`` is defanged too.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from string import Template
from typing import Any

from gateway.notify.routing import FIRE_KINDS, FIRE_RULES, ChannelKind
from sensors.registry import Device
from sensors.tenants import Tenant
from sensors.text import strip_controls

SMS_SEGMENT = 70                  # one UCS-2 SMS
SMS_PART = 67                     # each part of a concatenated UCS-2 SMS
SMS_MAX_UNITS = 2 * SMS_PART      # two parts: 134
SIGNATURE_RESERVE = 10            # room for the provider's 【signature】, e.g. 【园区消防】 = 6
TEMPLATE_PARAM_MAX = 20           # providers cap variable length (Aliyun: 35 for most types)

Lang = str
_LANGS = ("zh-CN", "en")

#: A human name per rule. Unknown rules fall back to their id with spaces.
RULE_NAMES: Mapping[str, tuple[str, str]] = {
    "fire_alarm": ("火警", "Fire alarm"),
    # 确认 means a person verified the fire on site; two detectors agreeing is 复合火警.
    "fire_confirmed": ("复合火警", "Confirmed fire"),
    "zone_pre_alarm": ("区域火灾预警", "Zone fire pre-alarm"),
    "pre_alarm": ("火灾预警", "Fire pre-alarm"),
    "heat_high": ("温度过高", "High heat"),
    "smoke_obscuration_high": ("烟雾浓度过高", "Dense smoke"),
    "gas_lel_high": ("可燃气体泄漏", "Combustible gas"),
    "co_high": ("一氧化碳超标", "High CO"),
    "water_pressure_low": ("消防水压过低", "Low water pressure"),
    "water_pressure_high": ("消防水压过高", "High water pressure"),
    "water_pressure_drop": ("消防水压骤降", "Water pressure drop"),
    "water_level_low": ("消防水池水位过低", "Low water level"),
    "water_level_high": ("消防水池水位过高", "High water level"),
    "residual_current_high": ("剩余电流超限", "Residual current high"),
    "cable_temp_l1_high": ("L1线缆温度过高", "Cable L1 overheating"),
    "cable_temp_l2_high": ("L2线缆温度过高", "Cable L2 overheating"),
    "cable_temp_l3_high": ("L3线缆温度过高", "Cable L3 overheating"),
    "cable_temp_n_high": ("N线缆温度过高", "Cable N overheating"),
    "fire_door_held_open": ("常闭防火门处于开启状态", "Fire door held open"),
    "environment_temperature_high": ("环境温度过高", "High room temperature"),
    "environment_humidity_high": ("环境湿度过高", "High humidity"),
    "power_voltage_low": ("欠压", "Low voltage"),
    "power_voltage_high": ("过压", "High voltage"),
    "device_offline": ("设备离线", "Device offline"),
    "fire_panel_offline": ("火灾报警控制器离线", "Fire panel offline"),
    "building_silent": ("整栋设备失联", "Building silent"),
    "device_fault": ("设备故障", "Device fault"),
    "pressure_sensor_fault": ("压力传感器故障", "Pressure sensor fault"),
    "supervisory": ("监管报警", "Supervisory"),
    "tamper": ("防拆报警", "Tamper"),
    "low_battery": ("电池电量低", "Low battery"),
    "point_isolated": ("屏蔽", "Point isolated"),
    "device_test": ("设备测试", "Device test"),
    "device_mute": ("设备消音", "Device muted"),
    "notify_test": ("通知测试", "Notification test"),
    "notification_dead": ("告警通知发送失败", "Notification undeliverable"),
    "ingest_stalled": ("监测数据中断", "Monitoring data stalled"),
    "storage_full": ("本地缓存已满", "Local buffer full"),
    "too_many_points": ("设备报警点位过多", "Too many points in alarm"),
    "scorecard_overdue": ("评定日报未生成", "Daily scorecard overdue"),
}

#: A fire-safety urgency scale, not network management's 严重/重要/次要/警告 (where 警告 reads
#: worse than 次要): 特急 > 紧急 > 一般 > 提示 > 信息 (docs/notifications.md).
SEVERITY_NAMES: Mapping[str, tuple[str, str]] = {
    "critical": ("特急", "Critical"), "major": ("紧急", "Major"), "minor": ("一般", "Minor"),
    "warning": ("提示", "Warning"), "info": ("信息", "Info"),
}

STATE_NAMES: Mapping[str, tuple[str, str]] = {
    "firing": ("报警", "ALARM"), "acknowledged": ("已响应", "Acknowledged"),
    "resolved": ("已恢复", "Resolved"),
}

#: A person's verdict on an acknowledged alarm. 属实 fits a gas or leakage alarm as well as a fire
#: (the old 真实火警/故障 did not).
DISPOSITION_NAMES: Mapping[str, tuple[str, str]] = {
    "real": ("属实", "Real"), "false_alarm": ("误报", "False alarm"), "test": ("测试", "Test"),
    "fault": ("设备故障", "Device fault"),
}

#: The zh-CN detail of a rule whose engine message (English, config/rules/*.yaml) adds more than
#: the rule name and value say. Rules not listed show only what a device wrote (events).
RULE_DETAILS_ZH: Mapping[str, str] = {
    "water_pressure_drop": "压力骤降，疑似放水或管网破裂",
    "building_silent": "整栋设备无数据，疑似断网或断电",
    "device_offline": "超时未上报",
    "notification_dead": "多次重试仍未送达",
    "too_many_points": "同时报警点位过多，已合并为一条",
    "scorecard_overdue": "昨日在线率与告警处置数据未能写入，请检查 InfluxDB 与告警库",
}

#: Rules and kinds whose SMS asks the reader to go and look: a fire signal.
FIRE_CALL_RULES = FIRE_RULES | {"heat_high", "smoke_obscuration_high"}
FIRE_CALL_ZH = "请立即到场核实"

#: Units by rule first (an electrical_fire device measures mA and °C), then by kind.
UNITS: Mapping[str, str] = {
    "residual_current_high": "mA", "environment_humidity_high": "%RH",
    "environment_temperature_high": "°C", "power_voltage_low": "V", "power_voltage_high": "V",
    "water_pressure_drop": "MPa",
    "water_pressure": "MPa", "water_level": "m", "gas": "%LEL", "co": "ppm", "heat": "°C",
    "smoke": "%/m", "electrical_fire": "°C", "power_meter": "V",
}

# Templates: $-placeholders only; ${x} where text follows directly.
_SMS = {
    "zh-CN": Template("[$severity]$rule$state_tag：$place$value，$time$note。$call$ack"),
    "en": Template("[$severity] $rule$state_tag: $place$value, $time$note.$call$ack"),
}
_TITLE = {
    "zh-CN": Template("[$severity]$rule$state_tag - $building_label"),
    "en": Template("[$severity] $rule$state_tag - $building_label"),
}
_LABELS = {
    "zh-CN": {"where": "位置", "value": "数值", "detail": "详情", "time": "时间",
              "state": "状态", "ack": "响应处理", "ack_sms": "响应：", "zone": "{}区",
              "tenant": "租户{}"},
    "en": {"where": "Where", "value": "Value", "detail": "Detail", "time": "Time",
           "state": "State", "ack": "Acknowledge", "ack_sms": " Ack: ", "zone": "zone {}",
           "tenant": "tenant {}"},
}


_QUOTES = {"zh-CN": ("「", "」"), "en": ("\u201c", "\u201d")}
#: ``scheme://``: http(s) becomes hxxp(s), any other scheme loses its colon to ``[:]``.
_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//)")
#: A dot a client would autolink: before a label of two or more letters (``evil.com``,
#: ``www.x``, ``a@evil.cn``, non-Latin TLDs too).
_DOMAIN_DOT = re.compile(r"(?<=\w)\.(?=[^\W\d_]{2,})")
_DOTTED_QUAD = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")


def defang(text: str) -> str:
    """Text no client turns into a link: ``http://evil.com`` → ``hxxp://evil[.]com``."""
    def scheme(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.lower() in ("http", "https"):
            return "hxxp" + name[4:] + ":"
        return name + "[:]"
    text = _SCHEME.sub(scheme, strip_controls(text))
    text = _DOTTED_QUAD.sub(lambda m: m.group(0).replace(".", "[.]"), text)
    return _DOMAIN_DOT.sub("[.]", text)


def device_text(text: str, lang: Lang) -> str:
    """Text that may come from a device, defanged and quoted so it reads as a quotation."""
    if not text:
        return ""
    left, right = _QUOTES[lang]
    return f"{left}{defang(text)}{right}"


@dataclass(frozen=True, slots=True)
class PlaceNames:
    """Display names of buildings, floors and zones (registry ``building_name`` …), by ID, and
    of tenants (the tenant register's company names): an officer knows 华盛电子, not hs-elec."""

    buildings: Mapping[tuple[str, str], str] = field(default_factory=dict)
    floors: Mapping[tuple[str, str, str], str] = field(default_factory=dict)
    zones: Mapping[tuple[str, str, str, str], str] = field(default_factory=dict)
    tenants: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_devices(cls, devices: Iterable[Device],
                     tenants: Iterable[Tenant] = ()) -> PlaceNames:
        b: dict[tuple[str, str], str] = {}
        f: dict[tuple[str, str, str], str] = {}
        z: dict[tuple[str, str, str, str], str] = {}
        for d in devices:
            if d.building_name:
                b.setdefault((d.park, d.building), d.building_name)
            if d.floor_name:
                f.setdefault((d.park, d.building, d.floor), d.floor_name)
            if d.zone_name:
                # A zone ID names one kind of area on every floor (east, core), so the name is
                # looked up by floor first and by building as a fallback (a zone-level alarm).
                z.setdefault((d.park, d.building, d.floor, d.zone), d.zone_name)
                z.setdefault((d.park, d.building, "", d.zone), d.zone_name)
        return cls(buildings=b, floors=f, zones=z, tenants={t.id: t.name for t in tenants})

    def names(self, doc: Mapping[str, Any]) -> tuple[str, str, str]:
        """(building, floor, zone) display names of an alarm document; "" where unnamed."""
        park, b = str(doc.get("park") or ""), str(doc.get("building") or "")
        f, z = str(doc.get("floor") or ""), str(doc.get("zone") or "")
        zone = self.zones.get((park, b, f, z)) or self.zones.get((park, b, "", z), "")
        return (self.buildings.get((park, b), ""), self.floors.get((park, b, f), ""),
                zone if z else "")


NO_NAMES = PlaceNames()


@dataclass(frozen=True, slots=True)
class Rendered:
    title: str
    text: str
    template_params: Mapping[str, str] = field(default_factory=dict)


def sms_units(text: str) -> int:
    """Length as an SMS counts it in UCS-2: characters outside the BMP take two units."""
    return sum(2 if ord(ch) > 0xFFFF else 1 for ch in text)


def _pick(table: Mapping[str, tuple[str, str]], key: str, lang: Lang) -> str:
    names = table.get(key)
    if names is None:
        return key.replace("_", " ")
    return names[0] if lang == "zh-CN" else names[1]


def _lang(lang: str) -> Lang:
    return lang if lang in _LANGS else "zh-CN"


def _local_time(doc: Mapping[str, Any], tz: dt.tzinfo) -> dt.datetime | None:
    state = doc.get("state")
    keys = {"resolved": ("resolved_at", "updated_at"),
            "acknowledged": ("acknowledged_at", "updated_at")}.get(
        str(state), ("fired_at", "started_at"))
    for key in keys:
        raw = doc.get(key)
        if isinstance(raw, str) and raw:
            return dt.datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(tz)
    return None


def _value(doc: Mapping[str, Any]) -> str:
    value = doc.get("value")
    if not isinstance(value, int | float) or isinstance(value, bool):
        return ""
    unit = str(doc.get("unit") or UNITS.get(str(doc.get("rule")))
               or UNITS.get(str(doc.get("kind")), ""))
    return f"{value:g}{' ' if unit and unit[0].isalpha() else ''}{unit}"


def _building(doc: Mapping[str, Any], lang: Lang, places: PlaceNames) -> str:
    b, f = str(doc.get("building") or ""), str(doc.get("floor") or "")
    if lang == "zh-CN":
        b_name, f_name, _ = places.names(doc)
        # Display names read as one place, "1号厂房2层"; bare IDs keep the old "b1栋2层".
        return (b_name or f"{b}栋") + ((f_name or f"{f}层") if f else "")
    return f"bldg {b}" + (f" fl {f}" if f else "")


def _zone(doc: Mapping[str, Any], lang: Lang, places: PlaceNames) -> str:
    """The zone's display name (zh-CN) or "" to show the ID with its label (`zone east`)."""
    return places.names(doc)[2] if lang == "zh-CN" else ""


def _detail(doc: Mapping[str, Any], lang: Lang) -> str:
    """The engine's message for en; for zh-CN no English: a zh-CN text or the device's words.

    An event's message is "<English prefix> $device ($location) $point $detail"
    (config/rules/devices.yaml): only the part after the device and location was written by the
    device (a point number, a panel's text), and that part is kept, quoted.
    """
    message = str(doc.get("message") or "")
    if lang != "zh-CN":
        return device_text(message, lang)
    zh = RULE_DETAILS_ZH.get(str(doc.get("rule")))
    if zh:
        return zh
    head = f"{doc.get('device') or ''} ({doc.get('location') or ''})"
    _, found, tail = message.partition(head)
    return device_text(tail.strip(), lang) if found and doc.get("device") else ""


def _fire_call(doc: Mapping[str, Any], lang: Lang) -> str:
    """请立即到场核实 for a firing fire signal (zh-CN SMS): the reader is asked to go and look."""
    fire = (str(doc.get("rule")) in FIRE_CALL_RULES or str(doc.get("kind")) in FIRE_KINDS)
    return f"{FIRE_CALL_ZH}。" if lang == "zh-CN" and fire and doc.get("state") == "firing" else ""


def _state_tag(state: str, lang: Lang) -> str:
    """Nothing for a firing alarm (the default), "(已恢复)" / " (Resolved)" otherwise."""
    if state == "firing":
        return ""
    name = _pick(STATE_NAMES, state, lang)
    return f"({name})" if lang == "zh-CN" else f" ({name})"


def _fields(doc: Mapping[str, Any], lang: Lang, tz: dt.tzinfo, park_name: str,
            places: PlaceNames) -> dict[str, str]:
    when = _local_time(doc, tz)
    state = str(doc.get("state") or "firing")
    return {
        "severity": _pick(SEVERITY_NAMES, str(doc.get("severity")), lang),
        "rule": _pick(RULE_NAMES, str(doc.get("rule")), lang),
        "state": _pick(STATE_NAMES, state, lang),
        "state_tag": _state_tag(state, lang),
        "park": park_name or str(doc.get("park") or ""),
        "building_label": _building(doc, lang, places),
        "zone_name": _zone(doc, lang, places),
        "call": _fire_call(doc, lang),
        "location": defang(str(doc.get("location") or "")),
        "zone": str(doc.get("zone") or ""),
        "tenant": _tenant(doc, lang, places),
        "value": _value(doc),
        "message": _detail(doc, lang),
        "time_short": when.strftime("%m-%d %H:%M") if when else "",
        "time_long": when.strftime("%Y-%m-%d %H:%M:%S %Z") if when else "",
    }


def _tenant(doc: Mapping[str, Any], lang: Lang, places: PlaceNames) -> str:
    """The company's name from the tenant register; without one, "租户<id>"."""
    tenant = str(doc.get("tenant") or "")
    if not tenant:
        return ""
    name = places.tenants.get(tenant)
    return defang(name) if name else _LABELS[lang]["tenant"].format(tenant)


# ---- SMS ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _SmsParts:
    park: str
    zone: str
    tenant: str
    location: str
    value: str
    detail: str
    note: str


#: What an SMS gives up to fit, first to last. The point's location is not in this list.
_SMS_SACRIFICE = ("detail", "park", "note", "tenant", "zone", "value")


def _sms_variants(f: Mapping[str, str], note: str) -> Iterator[_SmsParts]:
    """The parts of an SMS, from most to least complete.

    Order of sacrifice (:data:`_SMS_SACRIFICE`): the engine's detail message (the rule name and
    value say most of it), the park name (the recipient knows their park), the note, the tenant,
    the zone, then the value. The point's location is what sends someone to the right door, so
    it is never dropped: only when everything else is gone and it still does not fit (a location
    longer than the whole message) is it cut, keeping its head. The rule, the building and
    floor, the time and the ack link always stay.
    """
    parts = _SmsParts(park=f["park"], zone=f["zone"], tenant=f["tenant"], location=f["location"],
                      value=f["value"], detail=f["message"], note=note)
    yield parts
    for name in _SMS_SACRIFICE:
        parts = replace(parts, **{name: ""})
        yield parts
    loc = parts.location
    for n in range(len(loc) - 1, 0, -1):
        yield replace(parts, location=loc[:n] + "…")


def _sms_place(f: Mapping[str, str], p: _SmsParts, lang: Lang) -> str:
    labels = _LABELS[lang]
    sep = ", " if lang == "en" else " "
    bits = [p.park, f["building_label"], p.zone and _zone_label(f, p.zone, labels),
            p.tenant, p.location]
    head, *rest = [b for b in bits if b]
    if p.park:  # the park and the building read as one name: "xz01 b3栋2层"
        head, *rest = [f"{head} {rest[0]}", *rest[1:]]
    return sep.join([head, *rest])


def _zone_label(f: Mapping[str, str], zone: str, labels: Mapping[str, str]) -> str:
    return f["zone_name"] or labels["zone"].format(zone)


def _render_sms(f: Mapping[str, str], lang: Lang, ack_url: str | None, note: str,
                limit: int) -> str:
    ack = f"{_LABELS[lang]['ack_sms']}{ack_url}" if ack_url else ""
    comma = ", " if lang == "en" else "，"
    text = ""
    for p in _sms_variants(f, note):
        text = _SMS[lang].substitute(
            severity=f["severity"], rule=f["rule"], state_tag=f["state_tag"],
            place=_sms_place(f, p, lang),
            value=(f"{comma}{p.value}" if p.value else "") + (f" {p.detail}" if p.detail else ""),
            time=f["time_short"], note=f"{comma}{p.note}" if p.note else "", call=f["call"],
            ack=ack)
        if sms_units(text) <= limit:
            return text
    return text    # only an absurd ack link gets here; it is still never cut


def _short(value: str) -> str:
    return value if len(value) <= TEMPLATE_PARAM_MAX else value[:TEMPLATE_PARAM_MAX - 1] + "…"


def _template_params(f: Mapping[str, str], ack_url: str | None) -> dict[str, str]:
    """Variables for an approved provider template (Aliyun ${name} / Tencent {n} in this order)."""
    params = {k: _short(f[src]) for k, src in (
        ("park", "park"), ("building", "building_label"), ("location", "location"),
        ("rule", "rule"), ("severity", "severity"), ("state", "state"), ("value", "value"),
        ("time", "time_short"))}
    params["ack"] = ack_url or ""      # links are never shortened
    return params


# ---- IM and email -------------------------------------------------------------------------


def _lines(f: Mapping[str, str], lang: Lang, note: str) -> list[tuple[str, str]]:
    labels = _LABELS[lang]
    where = " · ".join(p for p in (f["park"], f["building_label"],
                                   f["zone"] and _zone_label(f, f["zone"], labels),
                                   f["tenant"],
                                   f["location"]) if p)
    rows = [(labels["where"], where), (labels["value"], f["value"]),
            (labels["detail"], f["message"]), (labels["time"], f["time_long"]),
            (labels["state"], f["state"] + (f" — {note}" if note else ""))]
    return [(k, v) for k, v in rows if v]


def _render_im(f: Mapping[str, str], lang: Lang, ack_url: str | None, note: str) -> str:
    head = f"### [{f['severity']}] {f['rule']}{f['state_tag']}"
    body = [f"- **{k}**: {_md(v)}" for k, v in _lines(f, lang, note)]
    link = [f"[{_LABELS[lang]['ack']}]({ack_url})"] if ack_url else []
    return "\n".join([head, "", *body, "", *link]).rstrip() + "\n"


def _md(text: str) -> str:
    """Device-supplied text must not turn into markdown links or headings."""
    return "".join("\\" + ch if ch in "\\`*_[]()#<>" else ch for ch in text)


def _render_email(f: Mapping[str, str], lang: Lang, ack_url: str | None, note: str) -> str:
    body = [f"{k}: {v}" for k, v in _lines(f, lang, note)]
    link = [f"{_LABELS[lang]['ack']}: {ack_url}"] if ack_url else []
    return "\n".join([f"{f['severity']} - {f['rule']}{f['state_tag']}", "", *body, "", *link]
                     ).rstrip() + "\n"


# ---- entry point --------------------------------------------------------------------------


def render(kind: ChannelKind | str, lang: str, alarm_document: Mapping[str, Any], *,
           ack_url: str | None, tz: dt.tzinfo, park_name: str = "", note: str = "",
           sms_limit: int = SMS_MAX_UNITS - SIGNATURE_RESERVE,
           places: PlaceNames = NO_NAMES) -> Rendered:
    """Title, text and SMS template variables for one alarm document on one kind of channel."""
    kind = ChannelKind(kind)
    lang = _lang(lang)
    if kind is ChannelKind.WEBHOOK:
        # Machines get the alarm document (docs/alarms.md) verbatim; wording is for people.
        doc = {**alarm_document, "ack_url": ack_url}
        return Rendered(title=f"{doc.get('rule')} {doc.get('state')}",
                        text=json.dumps(doc, ensure_ascii=False, sort_keys=True))
    f = _fields(alarm_document, lang, tz, park_name, places)
    title = _TITLE[lang].substitute(f)
    renderers: dict[ChannelKind, Callable[[], str]] = {
        ChannelKind.SMS: lambda: _render_sms(f, lang, ack_url, note, sms_limit),
        ChannelKind.IM: lambda: _render_im(f, lang, ack_url, note),
        ChannelKind.EMAIL: lambda: _render_email(f, lang, ack_url, note),
    }
    params = _template_params(f, ack_url) if kind is ChannelKind.SMS else {}
    return Rendered(title=title, text=renderers[kind](), template_params=params)


def escalation_note(lang: str, *, tier: int, repeat_n: int, unacked_s: float) -> str:
    """Why a later message is sent: an escalation tier or a repeat of an unacknowledged alarm."""
    minutes = max(1, round(unacked_s / 60))
    if _lang(lang) == "zh-CN":
        if repeat_n:
            return f"第{repeat_n}次提醒，{minutes}分钟未响应"
        return f"{minutes}分钟未响应，已升级" if tier else ""
    if repeat_n:
        return f"reminder {repeat_n}, unacknowledged {minutes} min"
    return f"unacknowledged {minutes} min, escalated" if tier else ""
