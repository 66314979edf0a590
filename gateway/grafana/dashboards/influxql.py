"""InfluxQL targets for the Grafana foundation SDK, which ships no InfluxDB query type.

The SDK models a panel target as a ``Dataquery`` variant, decoded by datasource type. This module
declares the ``influxdb`` variant (a raw InfluxQL query, what Grafana saves when the query editor
is in raw mode) and the annotation target Grafana's InfluxDB datasource reads, so dashboards are
built, serialised and parsed back through the SDK like any built-in query type.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import runtime as cogruntime
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models import dashboard

DATASOURCE_TYPE = "influxdb"
ResultFormat = Literal["time_series", "table"]


class InfluxQLQuery(cogvariants.Dataquery):
    """One raw InfluxQL target as Grafana stores it (``rawQuery: true``)."""

    def __init__(self, ref_id: str = "A", query: str = "",
                 result_format: ResultFormat = "time_series", alias: str | None = None,
                 datasource: dashboard.DataSourceRef | None = None,
                 hide: bool | None = None) -> None:
        self.ref_id = ref_id
        self.query = query
        self.result_format = result_format
        self.alias = alias
        self.datasource = datasource
        self.hide = hide

    def to_json(self) -> dict[str, object]:
        payload: dict[str, object] = {"refId": self.ref_id, "query": self.query,
                                      "rawQuery": True, "resultFormat": self.result_format}
        if self.alias is not None:
            payload["alias"] = self.alias
        if self.datasource is not None:
            payload["datasource"] = self.datasource
        if self.hide is not None:
            payload["hide"] = self.hide
        return payload

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        ds = data.get("datasource")
        return cls(ref_id=data.get("refId", "A"), query=data.get("query", ""),
                   result_format=data.get("resultFormat", "time_series"),
                   alias=data.get("alias"),
                   datasource=dashboard.DataSourceRef.from_json(ds) if ds else None,
                   hide=data.get("hide"))


def variant_config() -> cogruntime.DataqueryConfig:
    return cogruntime.DataqueryConfig(identifier=DATASOURCE_TYPE,
                                      from_json_hook=InfluxQLQuery.from_json)


def register() -> None:
    """Teach the SDK's decoder (its own process-wide registry) about InfluxQL targets, so
    ``Dashboard.from_json`` gives back :class:`InfluxQLQuery` objects instead of raw dicts."""
    cogruntime.register_dataquery_variant(variant_config())


class InfluxQL(cogbuilder.Builder[InfluxQLQuery]):
    """Builder in the SDK's style: ``InfluxQL(query).ref_id("B").table()``."""

    def __init__(self, query: str) -> None:
        self._internal = InfluxQLQuery(query=query)

    def build(self) -> InfluxQLQuery:
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        self._internal.ref_id = ref_id
        return self

    def table(self) -> Self:
        self._internal.result_format = "table"
        return self

    def alias(self, alias: str) -> Self:
        self._internal.alias = alias
        return self

    def datasource(self, ref: dashboard.DataSourceRef) -> Self:
        self._internal.datasource = ref
        return self


class InfluxAnnotationTarget(dashboard.AnnotationTarget):
    """The annotation query Grafana's InfluxDB datasource runs: rows of the result become
    annotations, ``message`` their text and the named columns their tags.

    The SDK's ``AnnotationTarget`` only knows Grafana's built-in annotation store, so parsing a
    dashboard back through the SDK keeps these keys only as far as that model goes."""

    def __init__(self, query: str, text_column: str, tags_columns: tuple[str, ...]) -> None:
        super().__init__()
        self.query = query
        self.text_column = text_column
        self.tags_columns = tags_columns

    def to_json(self) -> dict[str, object]:
        return {"refId": "Anno", "query": self.query, "rawQuery": True,
                "fromAnnotations": True, "queryType": "tags", "resultFormat": "table",
                "textColumn": self.text_column, "tagsColumn": ",".join(self.tags_columns)}


class InfluxAnnotation(cogbuilder.Builder[dashboard.AnnotationTarget]):
    def __init__(self, query: str, *, text_column: str, tags_columns: tuple[str, ...]) -> None:
        self._internal = InfluxAnnotationTarget(query, text_column, tags_columns)

    def build(self) -> InfluxAnnotationTarget:
        return self._internal
