"""The scorecard in four formats, all rendered from :func:`gateway.scorecard.report.as_dict`:
a terminal table, CSV (one figure a row), JSON, and a printable one-page HTML report (the page
a park hands in: self-contained, inline CSS, zh-CN first with English)."""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

#: (section, key, 中文, English, format): the headline figures, in the report's order.
_Fmt = Callable[[Any], str]


def pct(value: Any) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def num(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:g}" if isinstance(value, float) else str(value)


def secs(value: Any) -> str:
    return "—" if value is None else f"{value:g} s"


ROWS: tuple[tuple[str, str, str, str, _Fmt], ...] = (
    ("online", "rate", "设备在线率", "Device online rate", pct),
    ("online", "rate_outside_maintenance", "在线率（不含维护时段）",
     "Online rate outside maintenance", pct),
    ("online", "devices", "登记设备数", "Registered devices", num),
    ("online", "never_seen", "从未上线设备数", "Devices never seen", num),
    ("online", "maintenance_device_minutes", "维护时段（设备·分钟）",
     "Maintenance (device-minutes)", num),
    ("fire_false_alarms", "rate", "火警误报率", "Fire false-alarm rate", pct),
    ("fire_false_alarms", "judged", "已定性火警数", "Fire alarms with a disposition", num),
    ("fire_false_alarms", "false_alarms", "误报数", "False alarms", num),
    ("fire_false_alarms", "tests", "测试数", "Tests", num),
    ("fire_false_alarms", "undisposed_share", "24小时未定性比例",
     "Share without disposition after 24 h", pct),
    ("response", "critical", "紧急告警数", "Critical alarms", num),
    ("response", "p50_s", "确认时间P50", "Time to acknowledge P50", secs),
    ("response", "p90_s", "确认时间P90", "Time to acknowledge P90", secs),
    ("response", "within_3min_share", "3分钟内确认率", "Acknowledged within 3 min", pct),
    ("intactness", "rate", "设备完好率", "Equipment intactness", pct),
    ("intactness", "impaired_device_hours", "故障/离线/屏蔽（设备·小时）",
     "Fault, offline, isolated (device-hours)", num),
    ("intactness", "mttr_s", "平均修复时间", "Mean time to repair a fault", secs),
    ("water_compliance", "water_pressure", "水压合格率", "Water pressure compliance", pct),
    ("water_compliance", "water_level", "液位合格率", "Water level compliance", pct),
    ("alarms", "total", "告警总数", "Alarms", num),
)


#: Alarm classes (gateway.scorecard.kpis.alarm_class) and severities in Chinese.
LABELS_ZH = {"fire": "火警", "device": "设备状态", "hazard": "隐患", "system": "系统",
             "critical": "紧急", "major": "重要", "minor": "次要", "warning": "警告",
             "info": "提示"}


def figures(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(中文, English, formatted value) of every headline figure."""
    return [(zh, en, fmt(doc[section][key])) for section, key, zh, en, fmt in ROWS]


def period_text(doc: dict[str, Any], tz: ZoneInfo) -> str:
    def day(ms: int) -> str:
        return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M")
    return f"{day(doc['from_ms'])} – {day(doc['to_ms'])} ({tz.key})"


def scope_text(doc: dict[str, Any]) -> str:
    """``park``, ``park / tenant`` or, with a tenant register, ``park / tenant 企业名称``."""
    park: str = doc["park"]
    if not doc["tenant"]:
        return park
    return f"{park} / {doc['tenant']}" + (f" {company(doc)}" if company(doc) else "")


def company(doc: dict[str, Any]) -> str:
    """The tenant's company name (企业名称) from the register, or ""."""
    info = doc.get("tenant_info")
    return str(info["name"]) if info else ""


def manager_text(doc: dict[str, Any]) -> str:
    """The tenant's 消防安全管理人 and phone from the register, or ""."""
    info = doc.get("tenant_info")
    if not info:
        return ""
    m = info["fire_safety_manager"]
    return f"{m['name']} {m['phone']}"


def as_json(doc: dict[str, Any]) -> str:
    text: str = json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True)
    return text


def as_csv(doc: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["park", "tenant", "section", "figure", "label_zh", "label_en", "value"])
    for section, key, zh, en, _ in ROWS:
        w.writerow([doc["park"], doc["tenant"] or "", section, key, zh, en,
                    "" if doc[section][key] is None else doc[section][key]])
    return out.getvalue()


def as_table(doc: dict[str, Any], tz: ZoneInfo) -> str:
    lines = [f"{scope_text(doc)}  {period_text(doc, tz)}"]
    if manager_text(doc):
        lines.append(f"消防安全管理人 / Fire safety manager: {manager_text(doc)}")
    lines.append("")
    for zh, en, value in figures(doc):
        lines.append(f"  {value:>12}  {zh} / {en}")
    lines.append("")
    lines.append("  告警分类 / Alarms by class: " + _pairs(doc["alarms"]["by_class"]))
    lines.append("  告警级别 / Alarms by severity: " + _pairs(doc["alarms"]["by_severity"]))
    noisy = ", ".join(f"{n['device']} ({n['alarms']})" for n in doc["alarms"]["noisiest"])
    lines.append("  告警最多设备 / Noisiest devices: " + (noisy or "—"))
    return "\n".join(lines) + "\n"


def _pairs(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "—"


_CSS = """
@page { size: A4; margin: 14mm; }
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif;
       font-size: 9.5pt; color: #111; margin: 0; }
h1 { font-size: 16pt; margin: 0 0 2mm; } h1 small { font-size: 10pt; color: #555; }
p.meta { margin: 0 0 4mm; color: #333; }
table { border-collapse: collapse; width: 100%; margin-bottom: 4mm; }
th, td { border: 1px solid #999; padding: 0.8mm 2mm; text-align: left; }
td.v { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #eee; } .en { color: #555; font-size: 9pt; }
h2 { font-size: 11pt; margin: 2mm 0 1mm; }
.cols { display: flex; gap: 4mm; } .cols > div { flex: 1; }
footer { color: #555; font-size: 8.5pt; }
"""


def _tenant_meta(doc: dict[str, Any]) -> str:
    """A tenant's page: who answers for its fire safety (register), under the title."""
    info = doc.get("tenant_info")
    if not info:
        return ""
    e = html.escape
    r = info["fire_safety_responsible"]
    return (f'<p class="meta">企业名称 / Company: <b data-tenant-name>{e(company(doc))}</b> · '
            f'消防安全管理人 / Fire safety manager: {e(manager_text(doc))} · '
            f'消防安全责任人 / Responsible: {e(r["name"])} {e(r["phone"])} · '
            f'火灾危险性类别 / Fire hazard class: {e(info["fire_hazard_class"])}</p>\n')


def as_html(doc: dict[str, Any], tz: ZoneInfo, tenants: list[dict[str, Any]] | None = None
            ) -> str:
    """The one-page report; ``tenants`` (their own scorecards) add a per-tenant table."""
    e = html.escape
    rows = "".join(f'<tr><td>{e(zh)} <span class="en">{e(en)}</span></td>'
                   f'<td class="v" data-figure="{e(en)}">{e(v)}</td></tr>'
                   for zh, en, v in figures(doc))
    noisy = "".join(f'<tr><td>{e(n["device"])}</td><td class="v">{n["alarms"]}</td></tr>'
                    for n in doc["alarms"]["noisiest"])
    counts = "".join(f'<tr><td>{e(LABELS_ZH.get(k, k))} <span class="en">{e(k)}</span></td>'
                     f'<td class="v">{v}</td></tr>'
                     for k, v in [*doc["alarms"]["by_class"].items(),
                                  *doc["alarms"]["by_severity"].items()])
    tenant_rows = "".join(
        f'<tr><td>{e(t["tenant"])}</td><td>{e(company(t))}</td><td>{e(manager_text(t))}</td>'
        f'<td class="v">{pct(t["online"]["rate"])}</td>'
        f'<td class="v">{pct(t["fire_false_alarms"]["rate"])}</td>'
        f'<td class="v">{pct(t["intactness"]["rate"])}</td>'
        f'<td class="v">{t["alarms"]["total"]}</td></tr>' for t in tenants or [])
    tenant_table = (
        '<h2>企业 <span class="en">Tenants</span></h2><table><tr><th>企业 Tenant</th>'
        '<th>企业名称 Company</th><th>消防安全管理人 Fire safety manager</th>'
        '<th>在线率 Online</th><th>误报率 False alarms</th><th>完好率 Intact</th>'
        f'<th>告警 Alarms</th></tr>{tenant_rows}</table>' if tenant_rows else "")
    made = dt.datetime.fromtimestamp(doc["as_of_ms"] / 1000, tz).strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8">
<title>园区消防安全评分 {e(scope_text(doc))}</title><style>{_CSS}</style></head>
<body>
<h1>园区消防安全评分卡 <small>Park safety scorecard</small></h1>
<p class="meta">园区 / Park: <b>{e(scope_text(doc))}</b> ·
统计期 / Period: {e(period_text(doc, tz))}</p>
{_tenant_meta(doc)}<table><tr><th>指标 Figure</th><th>数值 Value</th></tr>{rows}</table>
<div class="cols"><div>
<h2>告警分类与级别 <span class="en">Alarms by class and severity</span></h2>
<table>{counts or '<tr><td>—</td></tr>'}</table>
</div><div>
<h2>告警最多的设备 <span class="en">Ten noisiest devices</span></h2>
<table>{noisy or '<tr><td>—</td></tr>'}</table>
</div></div>
{tenant_table}
<footer>ParkWatch · 生成于 / made {e(made)} · 计算公式见 docs/scorecard.md (formulas)</footer>
</body></html>
"""
