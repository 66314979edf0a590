"""The scorecard's pure figures on small hand-made data: intervals, overlaps, edge cases."""

from __future__ import annotations

from gateway.scorecard import kpis
from gateway.scorecard.model import AlarmFact, DeviceRef, MaintenanceSpan, Period, StatusPoint

P = Period(0, 1000)


def dev(device: str, kind: str = "smoke", zone: str = "z", tenant: str | None = None
        ) -> DeviceRef:
    return DeviceRef(device, "p1", "b1", "1", zone, kind, tenant)


def alarm(rule: str, device: str, start: int, end: int | None, *, fired: int | None = -1,
          severity: str = "minor", kind: str = "smoke", ack: int | None = None,
          disposition: str | None = None, maintenance: str = "none") -> AlarmFact:
    return AlarmFact(alarm_id=f"{rule}{device}{start}", rule=rule, severity=severity, park="p1",
                     device=device, tenant=None, kind=kind, started_at_ms=start,
                     fired_at_ms=start if fired == -1 else fired, acknowledged_at_ms=ack,
                     disposition=disposition, resolved_at_ms=end, maintenance=maintenance)


def test_union_counts_overlaps_once_and_clips_to_the_period() -> None:
    assert kpis.union_length([(-50, 100), (50, 200), (300, 400), (350, 380)], P) == 300
    assert kpis.union_length([(900, 5000)], P) == 100
    assert kpis.union_length([(10, 10), (2000, 3000)], P) == 0


def test_online_spans_from_transitions_and_the_state_before_the_period() -> None:
    pts = [StatusPoint("d", -10, True), StatusPoint("d", 200, False),
           StatusPoint("d", 300, False), StatusPoint("d", 600, True)]
    assert kpis.online_spans(pts, P) == [(0, 200), (600, 1000)]
    assert kpis.online_spans([], P) == []


def test_online_rate_counts_unseen_devices_offline_and_maintenance_apart() -> None:
    devices = [dev("a"), dev("b"), dev("c", zone="y")]
    status = {"a": [StatusPoint("a", 0, True), StatusPoint("a", 500, False)],
              "b": [StatusPoint("b", -5, True)]}
    windows = [MaintenanceSpan("zone", "p1/b1/1/z", "test", 400, 700)]
    o = kpis.online(devices, status, windows, P)
    assert (o.online_ms, o.registered_ms, o.never_seen) == (1500, 3000, 1)
    assert o.rate == 0.5
    # a: online 0-500, maintenance 400-700 -> 100 in maintenance; b: 300 in maintenance.
    assert o.maintenance_ms == 600
    assert o.online_outside_maintenance_ms == 1500 - 100 - 300
    assert o.rate_outside_maintenance == 1100 / 2400


def test_false_alarm_rate_and_the_undisposed_share() -> None:
    alarms = [
        alarm("fire_alarm", "a", 0, 10, ack=5, disposition="false_alarm"),
        alarm("fire_alarm", "a", 100, 110, ack=150, disposition="real"),
        alarm("fire_confirmed", "", 200, None),
        alarm("fire_alarm", "b", 300, 310, ack=301, disposition="test"),
        alarm("fire_alarm", "b", 400, 410, ack=401, disposition="false_alarm",
              maintenance="test"),
        alarm("gas_high", "c", 0, 10, disposition="false_alarm"),
        alarm("fire_alarm", "a", 2000, None, disposition="false_alarm"),  # after the period
    ]
    f = kpis.false_alarms(alarms, P, as_of_ms=kpis.DISPOSITION_DUE_MS + 250)
    assert (f.fired, f.judged, f.false_alarms, f.tests) == (4, 2, 1, 1)
    assert f.rate == 0.5
    assert (f.due, f.undisposed_after_24h) == (3, 1)     # the confirmed fire has no answer


def test_response_percentiles_are_nearest_rank_over_acknowledged_critical_alarms() -> None:
    crit = [alarm("fire_alarm", "a", i * 10, None, severity="critical", ack=i * 10 + t)
            for i, t in enumerate((30_000, 200_000, 60_000))]
    crit.append(alarm("fire_alarm", "b", 500, None, severity="critical"))
    crit.append(alarm("gas_high", "c", 600, None, severity="major", ack=601))
    r = kpis.response(crit, Period(0, 10**9))
    assert (r.critical, r.acknowledged, r.within_target) == (4, 3, 2)
    assert (r.p50_ms, r.p90_ms) == (60_000, 200_000)
    assert r.within_target_share == 0.5
    assert kpis.percentile([], 50) is None


def test_intactness_unions_fault_offline_isolation_and_liveness_per_device() -> None:
    devices = [dev("a"), dev("b")]
    alarms = [alarm("device_fault", "a", 100, 300), alarm("device_offline", "a", 200, 400),
              alarm("point_isolated", "b", 900, None), alarm("gas_high", "b", 0, 1000),
              alarm("device_fault", "b", 0, 50, fired=None)]     # never fired: not counted
    i = kpis.intactness(devices, alarms, {}, P)
    assert (i.device_ms, i.impaired_ms) == (2000, 400)
    assert i.rate == 0.8
    assert (i.faults_repaired, i.mean_time_to_repair_ms) == (1, 200)
    # With liveness: a's offline 600-1000 adds 400; b, never heard, is offline throughout.
    status = {"a": [StatusPoint("a", 0, True), StatusPoint("a", 600, False)]}
    assert kpis.intactness(devices, alarms, status, P).impaired_ms == 300 + 400 + 1000


def test_water_compliance_per_point_from_limit_alarm_lifetimes() -> None:
    devices = [dev("wp", "water_pressure"), dev("wl", "water_level"), dev("s")]
    alarms = [alarm("water_pressure_low", "wp", 100, 200, kind="water_pressure", fired=None),
              alarm("water_pressure_high", "wp", 150, 250, kind="water_pressure"),
              alarm("water_level_low", "wl", 800, None, kind="water_level"),
              alarm("water_pressure_drop", "wp", 0, 1000, kind="water_pressure")]
    c = kpis.compliance(devices, alarms, P)
    assert [(p.device, p.outside_ms) for p in c.points] == [("wl", 200), ("wp", 150)]
    assert c.rate("water_pressure") == 0.85
    assert c.rate("water_level") == 0.8
    assert c.rate() == 1 - 350 / 2000
    assert kpis.compliance([dev("s")], alarms, P).rate() is None


def test_counts_by_class_and_severity_and_the_noisiest_devices() -> None:
    alarms = [alarm("fire_alarm", f"d{i % 12:02d}", i, None, severity="critical")
              for i in range(30)]
    alarms.append(alarm("device_fault", "d00", 5, None))
    alarms.append(alarm("gas_high", "", 5, None, severity="major"))
    n = kpis.counts(alarms, P)
    assert n.total == 32
    assert n.by_class == {"device": 1, "fire": 30, "hazard": 1}
    assert n.by_severity == {"critical": 30, "major": 1, "minor": 1}
    assert n.noisiest[:3] == (("d00", 4), ("d01", 3), ("d02", 3))
    assert len(n.noisiest) == 10
