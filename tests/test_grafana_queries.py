"""Every dashboard query runs against a real InfluxDB filled by the simulator, and returns data.

One gateway plays every simulator scenario into a fresh database (a fire, a pipe burst, an
electrical fault, a silent device, garbage), with a webhook receiving notifications and one
alarm acknowledged, with a disposition. Then each template variable is expanded from real
``SHOW TAG VALUES`` results, Grafana's macros are substituted, and every panel and annotation
query must return at least one value. Separately, and without InfluxDB, no query may name a
measurement, tag or field that contract §5 (the sensor catalogue for telemetry) does not have.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import Settings
from gateway.grafana.dashboards import build_all
from gateway.metrics import Metrics
from gateway.notify.dispatcher import Dispatcher
from gateway.scorecard import daily
from gateway.scorecard.collect import collect
from gateway.scorecard.influxsource import write_lines
from gateway.scorecard.model import Period
from gateway.scorecard.report import compute
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.runner import run_simulation
from gateway.tools.simulator.scenarios import SCENARIO_NAMES
from rules.alarm import AlarmState, Disposition, Severity
from sensors.catalogue import KINDS
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.influx import influx_rows
from tests.support.notify_servers import ProviderServer
from tests.support.waiting import wait_for

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#: What Grafana would put in for its macros on a "last hour" dashboard.
MACROS = {"timeFilter": "time > now() - 1h", "__interval": "10s"}

# ---- the contract, in code -------------------------------------------------------------------

#: Contract §5: tags of every device-related point (tenant only when set).
LOCATION = {"park", "building", "floor", "zone", "device", "tenant"}


def gateway_fields() -> tuple[set[str], set[str]]:
    """Field names of the ``gateway`` measurement: one per sample of :class:`Metrics`; a
    labelled metric gives one field per label value, so its name is a prefix."""
    exact: set[str] = set()
    prefixes: set[str] = set()
    for family in Metrics().registry.collect():
        name = family.name.removeprefix("parkwatch_")
        if not family.samples:   # labelled, no label value used yet
            prefixes.add(name + ("_total_" if family.type == "counter" else "_"))
        for sample in family.samples:
            sample_name = sample.name.removeprefix("parkwatch_")
            if sample.name.endswith(("_created", "_bucket")):
                continue
            if sample.labels:
                prefixes.add(sample_name + "_")
            else:
                exact.add(sample_name)
    return exact, prefixes


def notification_names() -> set[str]:
    """Tags and fields of a ``notifications`` point, from the line the dispatcher writes."""
    line = Dispatcher._line("webhook", "ops@example.com", {"rule": "r", "severity": "major",
                                                          "park": "p", "building": "b",
                                                          "alarm_id": "a"}, "sent", 1, 2.0, 1)
    head, fields, _ = line.split(" ")
    return {kv.split("=")[0] for kv in [*head.split(",")[1:], *fields.split(",")]}


@dataclass(frozen=True)
class Schema:
    names: dict[str, set[str]]          # measurement → tag and field names
    gateway_prefixes: set[str]

    def allows(self, measurement: str, name: str) -> bool:
        if name in self.names.get(measurement, set()):
            return True
        return measurement == "gateway" and any(name.startswith(p)
                                                for p in self.gateway_prefixes)


def contract() -> Schema:
    names: dict[str, set[str]] = {}
    for kind in KINDS:
        if kind.values_model is not None:
            names[kind.name] = LOCATION | set(kind.values_model.model_fields) | {
                "battery_pct", "rssi_dbm", "seq"}
    names["events"] = LOCATION | {"kind", "type", "detail", "point", "seq"}
    names["alarms"] = LOCATION | {"kind", "rule", "severity", "alarm_id", "state", "value",
                                  "started_at_ms", "acknowledged_by", "disposition", "ack_s",
                                  "message"}
    names["device_status"] = LOCATION | {"kind", "online", "reason", "source", "never_seen"}
    exact, prefixes = gateway_fields()
    names["gateway"] = {"instance"} | exact
    names["notifications"] = notification_names()
    names["scorecard"] = set(daily.TAGS) | set(daily.FIELDS)
    return Schema(names, prefixes)


# ---- queries in the dashboards ---------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    dashboard: str
    where: str
    text: str


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def queries(dashboards: dict[str, dict[str, Any]]) -> list[Query]:
    out: list[Query] = []
    for stem, doc in dashboards.items():
        for panel in _panels(doc.get("panels", [])):
            out.extend(Query(stem, f"panel {panel['title']!r} {t['refId']}", t["query"])
                       for t in panel.get("targets", []))
        out.extend(Query(stem, f"annotation {a['name']!r}", a["target"]["query"])
                   for a in doc["annotations"]["list"] if "query" in a.get("target", {}))
        out.extend(Query(stem, f"variable {v['name']}", v["query"])
                   for v in doc["templating"]["list"] if v["type"] == "query")
    return out


_IDENT = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ALIAS = re.compile(r'\bAS "((?:[^"\\]|\\.)*)"')
_FROM = re.compile(r'\bFROM "((?:[^"\\]|\\.)*)"')


def unknown_names(query: str, schema: Schema) -> list[str]:
    """Quoted identifiers that are neither an alias nor a measurement, tag or field of a
    measurement the query reads (``SHOW TAG VALUES`` without FROM reads them all)."""
    aliases = set(_ALIAS.findall(query))
    sources = set(_FROM.findall(query)) or set(schema.names)
    problems = [f"measurement {m!r}" for m in sources if m not in schema.names]
    for name in _IDENT.findall(query):
        if name in aliases or name in sources:
            continue
        if not any(schema.allows(m, name) for m in sources):
            problems.append(f"{name!r} (not in {sorted(sources)})")
    return problems


def test_every_query_names_only_what_the_contract_has() -> None:
    schema = contract()
    found = queries(build_all())
    assert len(found) > 50
    bad = {f"{q.dashboard} {q.where}": unknown_names(q.text, schema) for q in found}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_checker_catches_a_misspelt_field() -> None:
    schema = contract()
    assert unknown_names('SELECT mean("pressure_mpa") FROM "water_pressure"', schema) == []
    assert unknown_names('SELECT mean("presure_mpa") FROM "water_pressure"', schema)
    assert unknown_names('SELECT "x" FROM "no_such_measurement"', schema)
    assert unknown_names('SHOW TAG VALUES WITH KEY = "site"', schema)


# ---- expansion, as Grafana does it ----------------------------------------------------------

def _escape(value: str) -> str:
    """Grafana's regex escaping of a variable value used inside ``=~ /.../``."""
    return re.sub(r"[\\^$*+?.()|{}\[\]/]", lambda m: "\\" + m.group(0), value)


def expand(query: str, values: dict[str, str]) -> str:
    substitutions = {**MACROS, **values}
    for name in sorted(substitutions, key=len, reverse=True):
        value = substitutions[name]
        query = query.replace("${" + name + "}", value)
        # Doubled so backslashes in an escaped value are not read as group references.
        query = re.sub(r"\$" + re.escape(name) + r"\b", value.replace("\\", "\\\\"), query)
    # Left alone: the regex end anchor ``$/`` and alias patterns ($tag_x, $col) Grafana
    # applies to results, not to the query.
    leftover = re.findall(r"\$(?!/|tag_|col\b)[\w{]+", query)
    assert not leftover, f"not substituted: {leftover} in {query}"
    return query


def choose_values(doc: dict[str, Any], run: Callable[[str], list[list[Any]]]) -> dict[str, str]:
    """Each query variable set to every value its real ``SHOW TAG VALUES`` returns (what
    picking them all in Grafana sends), the variables above it already applied."""
    chosen: dict[str, str] = {}
    for var in doc["templating"]["list"]:
        if var["type"] != "query":
            continue
        values = sorted({str(row[1]) for row in run(expand(var["query"], chosen))})
        assert values, f"{doc['uid']}: variable {var['name']} has no values"
        if var.get("multi") or var.get("includeAll"):
            chosen[var["name"]] = "(" + "|".join(_escape(v) for v in values) + ")"
        else:
            chosen[var["name"]] = values[0]
    return chosen


def has_values(rows: list[list[Any]]) -> bool:
    return any(v is not None for row in rows for v in row[1:])


# ---- the integration test --------------------------------------------------------------------

def _with_a_device_never_installed(registry: Registry) -> Registry:
    """The gateway's registry has one device more than the simulator plays: registered, never
    heard, so the liveness panels have a never-seen device to count."""
    template = next(d for d in registry if d.tenant is not None)
    ghost = template.model_copy(update={"device": "zz-never-seen", "report_interval_s": 1.0})
    return Registry({**registry.devices, ghost.device: ghost}, registry.source)


async def _fill(tmp_path: Path, mosquitto: Mosquitto, influxd: Influxd,
                registry: Registry) -> str:
    silent = min(registry, key=lambda d: (d.report_interval_s, d.device))
    async with ProviderServer(webhook_secret=SECRET) as hook:
        settings = make_settings(tmp_path, mqtt_url=mosquitto.url, influx_url=influxd.url,
                                 notify={"webhook_url": f"{hook.url}/parkwatch",
                                         "webhook_secret": SECRET})
        db = settings.influx.database

        def rows(q: str) -> list[list[Any]]:
            return influx_rows(influxd, db, q)

        async with running_gateway(settings, _with_a_device_never_installed(registry)) as gw:
            assert gw.alarms is not None
            assert gw.alarms.engine is not None
            engine = gw.alarms.engine
            stop = asyncio.Event()
            # Ten simulated seconds per second: every scenario unfolds, device clocks stay real.
            # The park keeps talking until the silent device is declared offline (its building
            # is not silent, which the rule can only tell while the others report).
            simulation = asyncio.create_task(run_simulation(
                registry=registry, mqtt_host="127.0.0.1", mqtt_port=mosquitto.port,
                root=settings.mqtt.topic_root, rate=None, duration_s=None, count=None,
                scenarios=list(SCENARIO_NAMES), speed=10.0, silent_devices=[silent.device],
                stop=stop))
            try:
                await wait_for(lambda: any(a.state is AlarmState.FIRING for a in engine.active()),
                               timeout_s=30, what="a firing alarm", task=simulation)
                firing = next(a for a in engine.active() if a.state is AlarmState.FIRING)
                assert gw.alarm_service is not None
                await gw.alarm_service.acknowledge(firing.alarm_id, by="duty officer",
                                                   disposition=Disposition.REAL, channel="api")
                # The scorecard's time to acknowledge counts critical alarms (a fire): one
                # must be acknowledged (unless the alarm above already was critical).
                if firing.severity is not Severity.CRITICAL:
                    await wait_for(lambda: any(a.severity is Severity.CRITICAL
                                               and a.state is AlarmState.FIRING
                                               for a in engine.active()),
                                   timeout_s=60, what="a critical alarm", task=simulation)
                    fire = next(a for a in engine.active() if a.severity is Severity.CRITICAL
                                and a.state is AlarmState.FIRING)
                    await gw.alarm_service.acknowledge(fire.alarm_id, by="duty officer",
                                                       disposition=Disposition.FALSE_ALARM,
                                                       channel="api")
                # Silence is declared after 3 of the device's report intervals of real time.
                await wait_for(lambda: any(a.subject.device == silent.device
                                           and a.state is AlarmState.FIRING
                                           for a in engine.active()),
                               timeout_s=90, what="silence alarm", task=simulation)
            finally:
                stop.set()
                await simulation
            await wait_for(lambda: bool(rows("SELECT count(\"alarm_id\") FROM \"alarms\" WHERE "
                                             f"\"device\" = '{silent.device}'")),
                           timeout_s=20, what="silence alarm in InfluxDB")
            await wait_for(lambda: bool(rows('SELECT * FROM "notifications" LIMIT 1')),
                           timeout_s=20, what="notification outcomes in InfluxDB")
            # The alarms dashboard's time to acknowledge and dispositions read these fields.
            await wait_for(lambda: bool(rows('SELECT "ack_s", "acknowledged_by" FROM "alarms" '
                                             "WHERE \"state\" = 'acknowledged' AND "
                                             "\"disposition\" = 'real'")),
                           timeout_s=20, what="acknowledgement with disposition in InfluxDB")
    await _scorecard_points(settings, registry)
    return db


async def _scorecard_points(settings: Settings, registry: Registry) -> None:
    """The scorecard dashboard reads what ``parkwatch scorecard --write`` stores: the last half
    hour's scorecard for the park and each tenant, stamped inside the dashboards' hour."""
    now = time.time_ns() // 1_000_000
    period = Period(now - 1_800_000, now)
    lines = []
    for park in registry.parks():
        inputs = await collect(settings, registry, park=park, period=period, as_of_ms=now)
        lines += [daily.daily_line(compute(inputs, park=park, period=period, as_of_ms=now,
                                           tenant=t)) for t in [None, *inputs.tenants()]]
    await write_lines(settings.influx, lines)


@pytest.mark.integration
async def test_every_panel_query_returns_data(tmp_path: Path, mosquitto: Mosquitto,
                                              influxd: Influxd,
                                              sample_registry: Registry) -> None:
    db = await _fill(tmp_path, mosquitto, influxd, sample_registry)

    def run(q: str) -> list[list[Any]]:
        result: Any = influxd.query(q, db)
        statement = result["results"][0]
        assert "error" not in statement, f"{q}: {statement['error']}"
        rows: list[list[Any]] = []
        for series in statement.get("series", []):
            rows.extend(series["values"])
        return rows

    dashboards = build_all()
    empty: list[str] = []
    for stem, doc in dashboards.items():
        values = choose_values(doc, run)
        for q in queries({stem: doc}):
            if q.where.startswith("variable"):
                continue
            if not has_values(run(expand(q.text, values))):
                empty.append(f"{stem} {q.where}: {expand(q.text, values)}")
    assert empty == []
