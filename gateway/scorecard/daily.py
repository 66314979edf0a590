"""The ``scorecard`` measurement: one point per park (and per tenant) per day.

Each point holds the day's numerators and denominators, not only the ratios, so a month is the
sum of its days divided once (exact), and the figures outlive the raw data's retention. The
percentiles of acknowledgement time cannot be summed: the day's p50/p90 are stored for charts,
and a month's exact percentiles come from the alarm store (``parkwatch scorecard``).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from gateway.scorecard.model import Period
from gateway.scorecard.report import Inputs, Scorecard, compute
from gateway.storage.lineprotocol import encode_line, escape_measurement, tag_set

MEASUREMENT = "scorecard"
#: Tags of a ``scorecard`` point.
TAGS = ("park", "scope", "tenant")
#: Its fields, except the per-class and per-severity counts ``alarms_<class>`` and
#: ``alarms_<severity>``. The ratios and percentiles are absent on a day they are undefined.
FIELDS = ("devices", "never_seen", "registered_min", "online_min", "maintenance_min",
          "online_outside_maintenance_min", "fire_fired", "fire_judged", "fire_false",
          "fire_tests", "fire_due_24h", "fire_undisposed_24h", "critical", "critical_acked",
          "critical_acked_3min", "device_h", "impaired_h", "faults_repaired", "repair_h",
          "water_points", "water_h", "water_outside_h", "alarms", "ack_p50_s", "ack_p90_s",
          "online_rate", "false_alarm_rate", "ack_3min_share", "intact_rate", "water_rate")


def daily_fields(sc: Scorecard) -> dict[str, float | int | bool | str]:
    o, f, r, i, c, n = (sc.online, sc.false_alarms, sc.response, sc.intactness, sc.compliance,
                        sc.counts)
    fields: dict[str, float | int | bool | str] = {
        # Integers as floats: InfluxDB fixes a field's type at its first write, and a float
        # field sums and divides in InfluxQL without casts.
        "devices": float(o.devices), "never_seen": float(o.never_seen),
        "registered_min": o.registered_ms / 60_000, "online_min": o.online_ms / 60_000,
        "maintenance_min": o.maintenance_ms / 60_000,
        "online_outside_maintenance_min": o.online_outside_maintenance_ms / 60_000,
        "fire_fired": float(f.fired), "fire_judged": float(f.judged),
        "fire_false": float(f.false_alarms), "fire_tests": float(f.tests),
        "fire_due_24h": float(f.due), "fire_undisposed_24h": float(f.undisposed_after_24h),
        "critical": float(r.critical), "critical_acked": float(r.acknowledged),
        "critical_acked_3min": float(r.within_target),
        "device_h": i.device_ms / 3_600_000, "impaired_h": i.impaired_ms / 3_600_000,
        "faults_repaired": float(i.faults_repaired), "repair_h": i.repair_ms_total / 3_600_000,
        "water_points": float(len(c.points)),
        "water_h": sum(p.period_ms for p in c.points) / 3_600_000,
        "water_outside_h": sum(p.outside_ms for p in c.points) / 3_600_000,
        "alarms": float(n.total),
    }
    for name, value in (("ack_p50_s", r.p50_ms), ("ack_p90_s", r.p90_ms)):
        if value is not None:
            fields[name] = value / 1000
    for ratio_name, ratio in (("online_rate", o.rate), ("false_alarm_rate", f.rate),
                              ("ack_3min_share", r.within_target_share),
                              ("intact_rate", i.rate), ("water_rate", c.rate())):
        if ratio is not None:
            fields[ratio_name] = ratio
    for cls, k in n.by_class.items():
        fields[f"alarms_{cls}"] = float(k)
    for sev, k in n.by_severity.items():
        fields[f"alarms_{sev}"] = float(k)
    return fields


def daily_line(sc: Scorecard) -> str:
    """The day's point, stamped with the day's start; tag ``scope`` is ``park`` or ``tenant``."""
    tags = {"park": sc.park, "scope": "tenant" if sc.tenant else "park"}
    if sc.tenant:
        tags["tenant"] = sc.tenant
    return encode_line(escape_measurement(MEASUREMENT), tag_set(tags), daily_fields(sc),
                       sc.period.start_ms)


def _epoch_ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def days(period: Period, tz: ZoneInfo) -> list[Period]:
    """The park's calendar days inside ``period`` (whole days only)."""
    out: list[Period] = []
    day = dt.datetime.fromtimestamp(period.start_ms / 1000, tz).replace(
        hour=0, minute=0, second=0, microsecond=0)
    while True:
        nxt = (day + dt.timedelta(days=1, hours=1)).replace(hour=0)   # DST-proof
        if _epoch_ms(day) >= period.start_ms and _epoch_ms(nxt) <= period.end_ms:
            out.append(Period(_epoch_ms(day), _epoch_ms(nxt)))
        if _epoch_ms(nxt) >= period.end_ms:
            return out
        day = nxt


def daily_lines(inputs: Inputs, *, park: str, period: Period, tz: ZoneInfo,
                as_of_ms: int) -> list[str]:
    lines: list[str] = []
    for day in days(period, tz):
        for tenant in [None, *inputs.tenants()]:
            lines.append(daily_line(compute(inputs, park=park, period=day, as_of_ms=as_of_ms,
                                            tenant=tenant)))
    return lines


def day_period(day: dt.date, tz: ZoneInfo) -> Period:
    """The park's calendar day ``day``: local midnight to the next (23 or 25 h on DST days)."""
    start = dt.datetime.combine(day, dt.time(), tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz)
    return Period(_epoch_ms(start), _epoch_ms(end))
