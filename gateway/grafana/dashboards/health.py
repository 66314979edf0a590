"""ParkWatch health: is the monitoring itself working — messages in, data out, people told."""

from __future__ import annotations

from typing import Any

from gateway.grafana.dashboards import schema
from gateway.grafana.dashboards.common import (
    INTERVAL,
    TIME_FILTER,
    Board,
    ident,
    stat_panel,
    tag_variable,
    targets,
    thresholds,
    timeseries_panel,
    value_text,
    var_match,
    where,
)
from rules.model import RuleSet
from sensors.base import RejectReason

UID = "parkwatch-health"
GATEWAY = ident(schema.GATEWAY)
HERE = var_match("instance")
BY_INSTANCE = f"GROUP BY time({INTERVAL}), {ident('instance')} fill(none)"


def _rates(fields: dict[str, str]) -> str:
    """Per-second rates of counters (the gateway writes running totals)."""
    select = ", ".join(f"non_negative_derivative(last({ident(f)}), 1s) AS {ident(alias)}"
                       for alias, f in fields.items())
    return f"SELECT {select} FROM {GATEWAY} WHERE {where(TIME_FILTER, HERE)} {BY_INSTANCE}"


def _gauges(fields: dict[str, str], fn: str = "max") -> str:
    select = ", ".join(f"{fn}({ident(f)}) AS {ident(alias)}" for alias, f in fields.items())
    return f"SELECT {select} FROM {GATEWAY} WHERE {where(TIME_FILTER, HERE)} {BY_INSTANCE}"


def _write_latency() -> str:
    """Mean InfluxDB write time per request: growth of the histogram's sum over its count."""
    total, count = ident("seconds"), ident("requests")
    inner = (f"SELECT non_negative_difference(last({ident('write_seconds_sum')})) AS {total}, "
             f"non_negative_difference(last({ident('write_seconds_count')})) AS {count} "
             f"FROM {GATEWAY} WHERE {where(TIME_FILTER, HERE)} {BY_INSTANCE}")
    return (f"SELECT {total} / {count} AS {ident('mean write time')} FROM ({inner}) "
            f"GROUP BY {ident('instance')}")


def _notifications(select: str, alias: str, by: tuple[str, ...]) -> str:
    group = ", ".join(ident(t) for t in by)
    return (f"SELECT {select} AS {ident(alias)} FROM {ident(schema.NOTIFICATIONS)} "
            f"WHERE {TIME_FILTER} GROUP BY time({INTERVAL}), {group} fill(none)")


def build(ruleset: RuleSet) -> dict[str, Any]:
    del ruleset
    board = Board(UID, "ParkWatch · Health",
                  "Is the monitoring healthy: ingest, rejects, InfluxDB writes, backlog and "
                  "notifications of each ParkWatch instance.",
                  variables=[tag_variable("instance", [], measurement=schema.GATEWAY)],
                  time_from="now-3h")
    links = {"MQTT broker": "broker_connected", "InfluxDB reachable": "influx_reachable",
             "InfluxDB credentials": "influx_auth_ok"}
    board.add(stat_panel("Connections", "1 = up. Broker and InfluxDB as the gateway sees them.",
                         [t.alias("$tag_instance $col")
                          for t in targets(_gauges(links, fn="last"))])
              .mappings([value_text({"1": ("UP", "green"), "0": ("DOWN", "red")})]),
              width=12, height=5)
    board.add(stat_panel("Backlog now", "Messages received but not yet acknowledged, and "
                         "write-ahead-log bytes not yet in InfluxDB.",
                         [t.alias("$tag_instance $col") for t in targets(
                             _gauges({"unacked": "unacked_in_flight"}, fn="last"),
                             _gauges({"WAL not in InfluxDB": "wal_pending_bytes"}, fn="last"))])
              .thresholds(thresholds([(None, "green"), (1000, "orange")])), width=12, height=5)
    ingest = {t: schema.received_field(t) for t in schema.MESSAGE_TYPES}
    ingest["readings accepted"] = "readings_accepted_total"
    board.add(timeseries_panel("Ingest rate", "Messages received per second by type, and "
                               "readings accepted (a batch message carries many).",
                               [t.alias("$col") for t in targets(_rates(ingest))],
                               unit="reqps"), width=12, height=8)
    rejects = {r.value: schema.rejected_field(r) for r in RejectReason}
    board.add(timeseries_panel("Rejects by reason", "Messages refused per second, by reason "
                               "(see docs/device-protocol.md#rejections).",
                               [t.alias("$col") for t in targets(_rates(rejects))],
                               unit="reqps", bars=True), width=12, height=8)
    board.add(timeseries_panel("InfluxDB write latency", "Mean time of one InfluxDB write "
                               "request per interval.", targets(_write_latency()), unit="s"),
              width=12, height=8)
    written = {"points written": "points_written_total",
               "points refused": "points_rejected_total"}
    board.add(timeseries_panel("InfluxDB points", "Points written per second, and points "
                               "InfluxDB refused (counted, not retried).",
                               [t.alias("$col") for t in targets(_rates(written))],
                               unit="reqps"), width=12, height=8)
    queued = {"unacked in flight": "unacked_in_flight",
              **{f"{q} queue": schema.queue_field(q) for q in schema.QUEUES}}
    board.add(timeseries_panel("In-flight and queued work", "Messages received and not yet "
                               "acknowledged, and the depth of the pipeline's queues.",
                               [t.alias("$col") for t in targets(_gauges(queued))]),
              width=12, height=8)
    board.add(timeseries_panel("Write-ahead log", "Bytes in the local log, and those not yet "
                               "written to InfluxDB (grows while InfluxDB is down).",
                               [t.alias("$col") for t in targets(_gauges(
                                   {"WAL bytes": "wal_bytes",
                                    "not yet in InfluxDB": "wal_pending_bytes"}))],
                               unit="bytes"), width=12, height=8)
    outcomes = _notifications(f"count({ident('latency_ms')})", "attempts",
                              ("channel", "outcome"))
    board.add(timeseries_panel("Notification outcomes", "Notification attempts per interval "
                               "by channel and outcome (sent, retry, failed, dead).",
                               [t.alias("$tag_channel $tag_outcome") for t in targets(outcomes)],
                               bars=True), width=12, height=8)
    latency = _notifications(f"mean({ident('latency_ms')})", "latency", ("channel",))
    board.add(timeseries_panel("Notification latency", "Mean time a provider took to answer, "
                               "per channel.",
                               [t.alias("$tag_channel") for t in targets(latency)], unit="ms"),
              width=12, height=8)
    return board.to_json()
