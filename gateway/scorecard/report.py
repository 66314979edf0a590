"""One scorecard: a park (or one tenant of it) over a period, from already-read data.

:func:`compute` is pure; :func:`as_dict` is the one shape every output format renders (JSON as
is, the table, CSV and HTML from it), so the numbers cannot differ between formats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.scorecard import kpis
from gateway.scorecard.model import (
    AlarmFact,
    DeviceRef,
    MaintenanceSpan,
    Period,
    StatusPoint,
)
from sensors.tenants import Tenant, TenantRegister


@dataclass(frozen=True, slots=True)
class Inputs:
    """Everything read for one park and period (any adapter may fill it)."""

    devices: Sequence[DeviceRef]
    alarms: Sequence[AlarmFact]
    status: Mapping[str, Sequence[StatusPoint]] = field(default_factory=dict)
    maintenance: Sequence[MaintenanceSpan] = ()

    def for_tenant(self, tenant: str) -> Inputs:
        """The tenant's devices (registry) and alarms (the alarm's ``tenant``)."""
        devices = [d for d in self.devices if d.tenant == tenant]
        return Inputs(devices=devices, alarms=[a for a in self.alarms if a.tenant == tenant],
                      status=self.status, maintenance=self.maintenance)

    def tenants(self) -> list[str]:
        return sorted({d.tenant for d in self.devices if d.tenant})


@dataclass(frozen=True, slots=True)
class Scorecard:
    park: str
    tenant: str | None
    period: Period
    as_of_ms: int
    online: kpis.Online
    false_alarms: kpis.FalseAlarms
    response: kpis.Response
    intactness: kpis.Intactness
    compliance: kpis.Compliance
    counts: kpis.Counts


def compute(inputs: Inputs, *, park: str, period: Period, as_of_ms: int,
            tenant: str | None = None) -> Scorecard:
    scoped = inputs.for_tenant(tenant) if tenant is not None else inputs
    devices = [d for d in scoped.devices if d.park == park]
    alarms = [a for a in scoped.alarms if a.park == park]
    return Scorecard(
        park=park, tenant=tenant, period=period, as_of_ms=as_of_ms,
        online=kpis.online(devices, scoped.status, scoped.maintenance, period),
        false_alarms=kpis.false_alarms(alarms, period, as_of_ms),
        response=kpis.response(alarms, period),
        intactness=kpis.intactness(devices, alarms, scoped.status, period),
        compliance=kpis.compliance(devices, alarms, period),
        counts=kpis.counts(alarms, period),
    )


def _r(value: float | None) -> float | None:
    # Six decimals: exact enough for any percentage shown, and stable in JSON and CSV.
    return None if value is None else round(value, 6)


def _minutes(ms: int) -> float:
    return round(ms / 60_000, 3)


def _hours(ms: int) -> float:
    return round(ms / 3_600_000, 3)


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def as_dict(sc: Scorecard) -> dict[str, Any]:
    """The scorecard as plain JSON-ready data; the keys are the figures' English names."""
    o, f, r, i, c, n = (sc.online, sc.false_alarms, sc.response, sc.intactness, sc.compliance,
                        sc.counts)
    return {
        "park": sc.park, "tenant": sc.tenant, "from_ms": sc.period.start_ms,
        "to_ms": sc.period.end_ms, "as_of_ms": sc.as_of_ms,
        "online": {"rate": _r(o.rate), "rate_outside_maintenance": _r(o.rate_outside_maintenance),
                   "devices": o.devices, "never_seen": o.never_seen,
                   "registered_device_minutes": _minutes(o.registered_ms),
                   "online_device_minutes": _minutes(o.online_ms),
                   "maintenance_device_minutes": _minutes(o.maintenance_ms)},
        "fire_false_alarms": {"rate": _r(f.rate), "fired": f.fired, "judged": f.judged,
                              "false_alarms": f.false_alarms, "tests": f.tests,
                              "due_24h": f.due, "undisposed_after_24h": f.undisposed_after_24h,
                              "undisposed_share": _r(f.undisposed_share)},
        "response": {"critical": r.critical, "acknowledged": r.acknowledged,
                     "p50_s": _seconds(r.p50_ms), "p90_s": _seconds(r.p90_ms),
                     "within_3min": r.within_target,
                     "within_3min_share": _r(r.within_target_share)},
        "intactness": {"rate": _r(i.rate), "device_hours": _hours(i.device_ms),
                       "impaired_device_hours": _hours(i.impaired_ms),
                       "faults_repaired": i.faults_repaired,
                       "mttr_s": _seconds(i.mean_time_to_repair_ms)},
        "water_compliance": {
            "rate": _r(c.rate()), "water_pressure": _r(c.rate("water_pressure")),
            "water_level": _r(c.rate("water_level")),
            "points": [{"device": p.device, "kind": p.kind, "rate": _r(p.rate),
                        "outside_minutes": _minutes(p.outside_ms)} for p in c.points]},
        "alarms": {"total": n.total, "by_class": n.by_class, "by_severity": n.by_severity,
                   "noisiest": [{"device": d, "alarms": k} for d, k in n.noisiest]},
    }


def tenant_doc(tenant: Tenant) -> dict[str, Any]:
    """Who the tenant is, from the tenant register: the ``tenant_info`` of a tenant's JSON."""
    return {"name": tenant.name,
            "fire_safety_responsible": {"name": tenant.fire_safety_responsible.name,
                                        "phone": tenant.fire_safety_responsible.phone},
            "fire_safety_manager": {"name": tenant.fire_safety_manager.name,
                                    "phone": tenant.fire_safety_manager.phone},
            "fire_hazard_class": tenant.fire_hazard_class,
            "floor_area_m2": tenant.floor_area_m2, "three_in_one": tenant.three_in_one}


def with_tenant_info(doc: dict[str, Any], register: TenantRegister | None) -> dict[str, Any]:
    """``doc`` with ``tenant_info`` (None without a register or for a park's scorecard)."""
    tenant = register.get(doc["tenant"]) if register is not None and doc["tenant"] else None
    return {**doc, "tenant_info": tenant_doc(tenant) if tenant is not None else None}
