"""Pieces every dashboard shares: the datasource, template variables, alarm annotations,
InfluxQL fragments, panel defaults and threshold steps drawn from the alarm rules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from gateway.grafana.dashboards import schema
from gateway.grafana.dashboards.influxql import DATASOURCE_TYPE, InfluxAnnotation, InfluxQL

#: The datasource ParkWatch's provisioning creates; the ``datasource`` variable defaults to it
#: and lets a Grafana that names its InfluxDB differently pick its own.
DATASOURCE_UID = "parkwatch-influxdb"
DS = model.DataSourceRef(type_val=DATASOURCE_TYPE, uid="${datasource}")

#: Grafana macros, substituted by Grafana (and by the query test) before InfluxDB sees them.
TIME_FILTER = "$timeFilter"
INTERVAL = "$__interval"
#: How far back "what is active now" looks. Alarms change state rarely, so the current state of
#: an alarm is its last point; one raised and never resolved longer ago than this drops off the
#: overview (the alarm API still lists it).
ACTIVE_WINDOW = "time > now() - 30d"

SEVERITY_COLORS = {"critical": "dark-red", "major": "red", "minor": "orange",
                   "warning": "yellow", "info": "blue"}
TAGS = ["parkwatch"]


def ident(name: str) -> str:
    """A double-quoted InfluxQL identifier. Every measurement, tag and field goes through here,
    which is also what lets the query test find and check them."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def var_match(tag: str, variable: str | None = None) -> str:
    """``"tag" =~ /^$variable$/``: one value, several (Grafana writes ``(a|b)``) or All (.*)."""
    return f"{ident(tag)} =~ /^${variable or tag}$/"


def one_of(tag: str, values: Sequence[str]) -> str:
    return f"{ident(tag)} =~ /^({'|'.join(values)})$/"


def where(*conditions: str) -> str:
    return " AND ".join(c for c in conditions if c)


def location_filter(variables: Sequence[str]) -> str:
    return where(*(var_match(v) for v in variables))


# ---- variables ----------------------------------------------------------------------------

def datasource_variable() -> dash.DatasourceVariable:
    return (dash.DatasourceVariable("datasource").label("Data source").type(DATASOURCE_TYPE)
            .current(model.VariableOption(text=DATASOURCE_UID, value=DATASOURCE_UID)))


def tag_variable(key: str, parents: Sequence[str], *, label: str | None = None,
                 measurement: str | None = None) -> dash.QueryVariable:
    """Values of one tag from ``SHOW TAG VALUES``, narrowed by the variables above it."""
    source = f" FROM {ident(measurement)}" if measurement else ""
    query = f"SHOW TAG VALUES{source} WITH KEY = {ident(key)}"
    if parents:
        query += " WHERE " + location_filter(parents)
    return (dash.QueryVariable(key).label(label or key.capitalize()).datasource(DS).query(query)
            .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD).sort(model.VariableSort.NATURAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(model.VariableOption(text="All", value="$__all")))


def tenant_variable() -> dash.QueryVariable:
    """The tenants (enterprises) of the selected park, from the devices' liveness points (every
    registered device has them). A device without a tenant matches only All (``.*``)."""
    return tag_variable("tenant", ["park"], measurement=schema.DEVICE_STATUS)


def location_variables(depth: int) -> list[dash.QueryVariable]:
    """park → building → floor → zone → device, each filtered by the ones before it."""
    names = schema.LOCATION_TAGS[:depth]
    return [tag_variable(name, names[:i]) for i, name in enumerate(names)]


# ---- annotations -----------------------------------------------------------------------------

Annotation = cogbuilder.Builder[model.AnnotationQuery]


def alarm_annotations(filters: Sequence[str] = ()) -> list[Annotation]:
    """Alarm state changes from the ``alarms`` measurement, on every time-series panel."""
    def query(states: str) -> str:
        return (f"SELECT {ident('message')}, {ident('severity')}, {ident('rule')}, "
                f"{ident('device')} FROM {ident(schema.ALARMS)} "
                f"WHERE {where(TIME_FILTER, states, *filters)}")

    raised = (dash.AnnotationQuery().name("Alarms raised").datasource(DS).enable(True)
              .icon_color("red")
              .target(InfluxAnnotation(query(f"{ident('state')} = 'firing'"),
                                       text_column="message",
                                       tags_columns=("severity", "rule", "device"))))
    settled = (dash.AnnotationQuery().name("Alarms acknowledged or resolved").datasource(DS)
               .enable(False).icon_color("blue")
               .target(InfluxAnnotation(query(f"{ident('state')} <> 'firing'"),
                                        text_column="message",
                                        tags_columns=("severity", "rule", "device"))))
    return [raised, settled]


# ---- dashboards and panels -------------------------------------------------------------------

class Board:
    """A dashboard under construction: numbers panels in order so their ids are stable."""

    def __init__(self, uid: str, title: str, description: str, *,
                 variables: Sequence[cogbuilder.Builder[model.VariableModel]],
                 annotation_filters: Sequence[str] = (), time_from: str = "now-6h") -> None:
        self._next_id = 1
        self.builder = (dash.Dashboard(title).uid(uid).description(description).tags(TAGS)
                        .editable().time(time_from, "now").refresh("30s").timezone("browser")
                        .tooltip(model.DashboardCursorSync.CROSSHAIR)
                        .with_variable(datasource_variable())
                        .annotations(alarm_annotations(annotation_filters)))
        for variable in variables:
            self.builder.with_variable(variable)

    def add(self, panel: Any, *, width: int, height: int) -> Board:
        panel.id(self._next_id).span(width).height(height).datasource(DS)
        self._next_id += 1
        self.builder.with_panel(panel)
        return self

    def row(self, title: str) -> Board:
        self.builder.with_row(dash.Row(title).id(self._next_id))
        self._next_id += 1
        return self

    def to_json(self) -> dict[str, Any]:
        plain: dict[str, Any] = _plain(JSONEncoder(sort_keys=True).default(self.builder.build()))
        return plain


def _plain(value: Any) -> Any:
    """SDK objects → plain JSON values (the encoder only does one level per call)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _plain(to_json())
    return value


def targets(*queries: str, table_format: bool = False) -> list[InfluxQL]:
    out = []
    for i, q in enumerate(queries):
        target = InfluxQL(q).ref_id(chr(ord("A") + i))
        out.append(target.table() if table_format else target)
    return out


def as_targets(queries: Sequence[InfluxQL]) -> list[cogbuilder.Builder[Dataquery]]:
    return list(queries)


def timeseries_panel(title: str, description: str, queries: Sequence[InfluxQL], *,
                     unit: str = "short", bars: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).targets(as_targets(queries))
             .unit(unit).line_width(1).fill_opacity(10).span_nulls(True)
             .legend(common_builder.VizLegendOptions().show_legend(True)
                     .display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.RIGHT).calcs(["lastNotNull", "max"]))
             .tooltip(common_builder.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.DESCENDING)))
    if bars:
        panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80).stacking(
            common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
    return panel


def stat_panel(title: str, description: str, queries: Sequence[InfluxQL], *,
               unit: str = "short") -> stat.Panel:
    return (stat.Panel().title(title).description(description).targets(as_targets(queries))
            .unit(unit)
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .graph_mode(common.BigValueGraphMode.NONE)
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
            .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"])
                            .values(False)))


def table_panel(title: str, description: str, queries: Sequence[InfluxQL]) -> table.Panel:
    return (table.Panel().title(title).description(description).targets(as_targets(queries))
            .filterable(True).cell_height(common.TableCellHeight.SM))


def transformation(kind: str, options: dict[str, Any]) -> model.DataTransformerConfig:
    return model.DataTransformerConfig(id_val=kind, options=options)


def thresholds(steps: Sequence[tuple[float | None, str]]) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(
        [model.Threshold(value=v, color=c) for v, c in steps])


def rule_steps(limits: Sequence[schema.Limit]) -> list[tuple[float | None, str]]:
    """Threshold steps that colour exactly the regions where a rule fires.

    Low limits (``<``) colour everything below them, the most severe (lowest) first; high
    limits (``>``/``>=``) colour everything from them upwards; between the two the normal
    band stays clear."""
    lows = sorted((lim for lim in limits if lim.op in ("<", "<=")), key=lambda lim: lim.value)
    highs = sorted((lim for lim in limits if lim.op in (">", ">=")), key=lambda lim: lim.value)
    clear = "transparent"
    steps: list[tuple[float | None, str]] = [
        (None, SEVERITY_COLORS[lows[0].severity] if lows else clear)]
    for i, low in enumerate(lows):
        above = lows[i + 1] if i + 1 < len(lows) else None
        steps.append((low.value, SEVERITY_COLORS[above.severity] if above else clear))
    steps.extend((high.value, SEVERITY_COLORS[high.severity]) for high in highs)
    return steps


def stat_steps(limits: Sequence[schema.Limit]) -> list[tuple[float | None, str]]:
    """Like :func:`rule_steps`, but a healthy value shows green rather than nothing."""
    return [(v, "green" if c == "transparent" else c) for v, c in rule_steps(limits)]


def value_text(mapping: dict[str, tuple[str, str]]) -> model.ValueMap:
    """Value → (display text, colour)."""
    return model.ValueMap(options={
        value: model.ValueMappingResult(text=text, color=color, index=i)
        for i, (value, (text, color)) in enumerate(mapping.items())})


def prop(name: str, value: Any) -> model.DynamicConfigValue:
    """One field-config property of an override (``custom.cellOptions``, ``mappings`` ...)."""
    return model.DynamicConfigValue(id_val=name, value=value)
