"""The words on the dashboards per language (issue 14): the generators write English, and
:func:`localize` turns a dashboard into another language with this table.

Only what a person reads is translated: dashboard and panel titles, variable labels, legends
(``alias``), value-mapping texts (FIRE/ALARM/FAULT → 火警/报警/故障), table column names, and a
metric's display name instead of its field name (``smoke · obscuration_pct_m`` → 感烟探测器 ·
减光率). Queries, UIDs, units (Grafana draws °C, V, MPa the same in both) and the panel
descriptions (hover help) are left as they are. A title missing from the table is an error,
so a new panel cannot ship half in English (tests/test_grafana_dashboards.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LANGS = ("en", "zh-CN")

#: Sensor kinds and measured fields by their Chinese display names.
KIND_NAMES_ZH: Mapping[str, str] = {
    "smoke": "感烟探测器", "heat": "感温探测器", "gas": "可燃气体探测器", "co": "一氧化碳探测器",
    "water_pressure": "消防水压", "water_level": "消防水池液位",
    "electrical_fire": "电气火灾监控", "power_meter": "消防电源监测", "fire_door": "防火门",
    "environment": "环境监测", "manual_call_point": "手动报警按钮", "fire_panel": "火灾报警控制器",
}
FIELD_NAMES_ZH: Mapping[str, str] = {
    "obscuration_pct_m": "减光率", "temperature_c": "温度", "lel_pct": "可燃气体浓度",
    "co_ppm": "一氧化碳浓度", "pressure_mpa": "压力", "level_m": "液位",
    "residual_current_ma": "剩余电流", "temp_l1_c": "L1线缆温度", "temp_l2_c": "L2线缆温度",
    "temp_l3_c": "L3线缆温度", "temp_n_c": "N线缆温度", "humidity_pct": "湿度",
    "voltage_v": "电压", "current_a": "电流", "power_kw": "有功功率", "energy_kwh": "电能",
    "frequency_hz": "频率", "power_factor": "功率因数", "open": "开启状态",
}

ZH_CN: Mapping[str, str] = {
    # dashboards
    "ParkWatch · Alarms": "ParkWatch · 告警",
    "ParkWatch · Building drilldown": "ParkWatch · 建筑详情",
    "ParkWatch · Electrical fire": "ParkWatch · 电气火灾",
    "ParkWatch · Health": "ParkWatch · 系统运行状态",
    "ParkWatch · Park overview": "ParkWatch · 园区总览",
    "ParkWatch · Park safety scorecard": "ParkWatch · 园区消防安全评分",
    "ParkWatch · Water systems": "ParkWatch · 消防水系统",
    # panels
    "Acknowledgements": "响应情况", "Active alarms": "当前告警",
    "Active alarms here": "本处当前告警",
    "Alarm history": "告警历史", "Alarm state changes": "告警状态变化", "Alarms raised": "告警数量",
    "Backlog now": "当前积压", "Building status": "建筑状态",
    "Cable temperatures per circuit": "各回路线缆温度", "Connections": "连接",
    "Device events": "设备事件", "Device status": "设备状态", "Devices online": "在线设备",
    "Dispositions": "处置结果", "Electrical alarms": "电气告警",
    "Fire-water tank and pool levels": "消防水箱/水池液位", "Health per kind": "各类设备状态",
    "In-flight and queued work": "处理中与排队任务", "InfluxDB points": "InfluxDB 写入点数",
    "InfluxDB write latency": "InfluxDB 写入延迟", "Ingest rate": "接收速率",
    "Never seen": "从未上线", "Notification latency": "通知延迟",
    "Notification outcomes": "通知结果",
    "Pipe network pressure (hydrant and sprinkler)": "管网压力（消火栓与喷淋）",
    "Pressure now": "当前压力", "Raised by rule": "按告警类型", "Rejects by reason": "拒收原因",
    "Residual current now": "当前剩余电流", "Residual current per circuit": "各回路剩余电流",
    "Silent devices": "失联设备", "Time to acknowledge": "响应用时", "Water alarms": "水系统告警",
    "Write-ahead log": "预写日志",
    "24 h 未定性 Undisposed after 24 h": "24 小时未定性",
    "3 分钟确认率 Acknowledged within 3 min": "3 分钟响应率", "企业 Tenants": "企业",
    "告警 Alarms": "告警", "在线率 Online rate": "在线率", "完好率 Intactness": "完好率",
    "每日 Daily figures": "每日指标", "水压/液位合格率 Water compliance": "水压/液位合格率",
    "火警误报率 Fire false-alarm rate": "火警误报率",
    "确认时间 Time to acknowledge (day P50 / P90)": "响应用时（日 P50 / P90）",
    # variables
    "Building": "建筑", "Data source": "数据源", "Device": "设备", "Floor": "楼层",
    "Instance": "实例", "Park": "园区", "Severity": "级别", "Tenant": "企业", "Zone": "区域",
    # legends and columns
    "online rate": "在线率", "acknowledged at": "响应时间", "acknowledged by": "响应人",
    "alarms": "告警数", "building": "建筑", "device": "设备", "disposition": "处置结果",
    "floor": "楼层", "last change": "最近变化", "rule": "告警类型", "severity": "级别",
    "since": "开始时间", "time to acknowledge": "响应用时", "zone": "区域",
    # value mappings: the panel's and the fire-safety words (gateway/notify/templates.py)
    "FIRE": "火警", "ALARM": "报警", "FAULT": "故障", "NORMAL": "正常", "All": "全部",
    "UP": "运行", "DOWN": "停止", "acknowledged": "已响应", "critical": "特急", "major": "紧急",
    "minor": "一般", "warning": "提示", "info": "信息", "equipment fault": "设备故障",
    "false alarm": "误报", "firing: not acknowledged": "报警中：未响应",
    "not open": "关闭", "open": "开启", "offline": "离线", "online": "在线", "real": "属实",
    "test": "测试",
}

#: Keys whose string value a person reads; every other string (queries, UIDs) stays.
_TEXT_KEYS = frozenset({"title", "label", "text", "alias"})
#: Texts that are names, not words: a datasource's name.
_KEEP = frozenset({"parkwatch-influxdb"})


def metric_title(title: str) -> str | None:
    """``smoke · obscuration_pct_m`` → ``感烟探测器 · 减光率``; ``co readings`` →
    ``一氧化碳探测器读数``; None for any other text."""
    kind, sep, metric = title.partition(" · ")
    if sep and kind in KIND_NAMES_ZH and metric in FIELD_NAMES_ZH:
        return f"{KIND_NAMES_ZH[kind]} · {FIELD_NAMES_ZH[metric]}"
    kind, sep, rest = title.partition(" ")
    if sep and rest == "readings" and kind in KIND_NAMES_ZH:
        return f"{KIND_NAMES_ZH[kind]}读数"
    return None


def translate(text: str, lang: str) -> str:
    """One text in ``lang``; KeyError for a zh-CN text nobody translated."""
    if lang == "en" or text in _KEEP or text.startswith("$") or not text.strip():
        return text
    found = ZH_CN.get(text) or metric_title(text)
    if found is None:
        raise KeyError(f"no {lang} text for {text!r} (gateway/grafana/dashboards/labels.py)")
    return found


def localize(doc: Any, lang: str) -> Any:
    """A copy of a dashboard (or any part of one) with its readable texts in ``lang``."""
    if lang == "en":
        return doc
    if isinstance(doc, list):
        return [localize(item, lang) for item in doc]
    if not isinstance(doc, dict):
        return doc
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _TEXT_KEYS and isinstance(value, str):
            out[key] = translate(value, lang)
        elif key == "renameByName" and isinstance(value, dict):
            out[key] = {k: translate(v, lang) for k, v in value.items()}
        else:
            out[key] = localize(value, lang)
    return out
