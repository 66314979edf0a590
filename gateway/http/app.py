"""Status endpoints: ``/metrics`` (Prometheus), ``/healthz``, ``/status`` (JSON, for `top`),
plus the alarm API and the ack pages.

Bound to loopback by default: the API reveals the park's layout and acknowledges alarms. Writes
always need ``Authorization: Bearer <token>`` (generated into ``state_dir/http.token`` unless
``http.token`` is set); with ``http.token`` set (required off loopback) every route but
``/healthz`` and ``/ack/…`` needs it (:mod:`gateway.http.auth`, docs/security.md).
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from aiohttp import web

from gateway.alarms.acklinks import AckLinks
from gateway.config import Settings, is_loopback
from gateway.http.ackpage import add_ack_routes
from gateway.http.alarmapi import AlarmService, add_alarm_routes
from gateway.http.auth import ApiToken, api_middlewares, api_token
from gateway.http.tenantapi import add_tenant_routes
from gateway.http.uitdapi import UitdControl, add_uitd_routes
from gateway.metrics import Metrics
from gateway.notify.templates import PlaceNames
from rules.alarm import Alarm, AlarmState
from sensors.errors import ConfigError
from sensors.tenants import TenantRegister

CONTENT_TYPE_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class GatewayView(Protocol):
    """All the HTTP layer may see of a running gateway (gateway/runtime/gateway.py has it)."""

    # Read-only properties: a gateway's own (more specific) types satisfy them.
    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def started_at(self) -> float: ...

    @property
    def alarm_service(self) -> AlarmService | None: ...

    @property
    def ack_links(self) -> AckLinks | None: ...

    @property
    def places(self) -> PlaceNames: ...

    @property
    def untrusted_clock_devices(self) -> set[str]: ...

    def broker_connected(self) -> bool: ...

    def device_count(self) -> int: ...

    def newest_readings(self, limit: int) -> list[dict[str, Any]]: ...

    def active_alarms(self) -> list[Alarm]: ...

    @property
    def uitd(self) -> UitdControl | None: ...

    @property
    def tenants(self) -> TenantRegister | None:
        """The tenant register, when ``tenants`` is configured."""
        ...

    @property
    def cluster_role(self) -> ClusterRole | None:
        """Partition, role and epoch with partitions (docs/scale.md); None on a single box."""
        ...


class ClusterRole(Protocol):
    """What /status shows of a partitioned instance (gateway/cluster/standby.py: Role)."""

    @property
    def role(self) -> str: ...

    def view(self) -> dict[str, Any]: ...


GATEWAY = web.AppKey("gateway", GatewayView)
API_TOKEN = web.AppKey("api_token", ApiToken)


def build_app(gateway: GatewayView) -> web.Application:
    """The API app; ConfigError if ``http.token_file`` cannot be read or the generated token
    cannot be written."""
    token = api_token(gateway.settings)
    app = web.Application(middlewares=api_middlewares(gateway.settings, token))
    app[GATEWAY] = gateway
    app[API_TOKEN] = token
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/status", _status)
    app.router.add_get("/active", _active)
    if gateway.uitd is not None:
        add_uitd_routes(app, gateway.uitd)
    if gateway.tenants is not None:
        add_tenant_routes(app, gateway.tenants)
    service = gateway.alarm_service
    if service is not None:
        add_alarm_routes(app, service)
        if gateway.ack_links is not None:
            add_ack_routes(app, links=gateway.ack_links, service=service,
                           tz=gateway.settings.timezone_for, places=gateway.places)
    return app


async def _metrics(request: web.Request) -> web.Response:
    gw: GatewayView = request.app[GATEWAY]
    return web.Response(body=gw.metrics.exposition(),
                        headers={"Content-Type": CONTENT_TYPE_PROMETHEUS})


def health(gw: GatewayView) -> dict[str, Any]:
    value = gw.metrics.value
    broker = gw.broker_connected()
    reachable = value("parkwatch_influx_reachable") == 1
    auth_ok = value("parkwatch_influx_auth_ok") == 1
    role = gw.cluster_role
    return {
        "status": "ok" if broker and reachable and auth_ok else "degraded",
        **({"cluster": role.view()} if role is not None else {}),
        "broker_connected": broker,
        "influx_reachable": reachable,
        "influx_auth_ok": auth_ok,
        "wal_pending_bytes": int(value("parkwatch_wal_pending_bytes")),
        "unacked_in_flight": int(value("parkwatch_unacked_in_flight")),
    }


async def _healthz(request: web.Request) -> web.Response:
    body = health(request.app[GATEWAY])
    return web.json_response(body, status=200 if body["status"] == "ok" else 503)


async def _active(request: web.Request) -> web.Response:
    """200 on the instance that runs the pipeline (a partition's active, or a single box):
    what a load balancer in front of ack links and the API checks (docs/scale.md)."""
    role = request.app[GATEWAY].cluster_role
    name = role.role if role is not None else "single"
    return web.json_response({"role": name}, status=200 if name in ("active", "single")
                             else 503)


def _counter_map(gw: GatewayView, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in gw.metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name + "_total":
                key = next(iter(sample.labels.values()), "total") if sample.labels else "total"
                out[key] = sample.value
    return out


async def _status(request: web.Request) -> web.Response:
    gw: GatewayView = request.app[GATEWAY]
    return web.json_response({
        "instance": gw.settings.instance,
        "uptime_s": round(time.time() - gw.started_at, 1),
        "devices": gw.device_count(),
        "health": health(gw),
        "received": _counter_map(gw, "parkwatch_messages_received"),
        "accepted": _counter_map(gw, "parkwatch_messages_accepted"),
        "rejected": _counter_map(gw, "parkwatch_messages_rejected"),
        "points_written": _counter_map(gw, "parkwatch_points_written").get("total", 0),
        "untrusted_clock_devices": sorted(gw.untrusted_clock_devices),
        "latest": gw.newest_readings(40),
        "alarms": _active_alarms(gw),
    })


def _active_alarms(gw: GatewayView, limit: int = 20) -> list[dict[str, Any]]:
    """Firing and acknowledged alarms, worst first, for the live view."""
    shown = [a for a in gw.active_alarms() if a.state is not AlarmState.PENDING]
    shown.sort(key=lambda a: (-a.severity.rank, -(a.fired_at_ms or 0)))
    return [{"severity": a.severity.value, "state": a.state.value, "rule": a.rule,
             "where": a.subject.device or a.subject.zone or a.subject.building,
             "building": a.subject.building, "since_ms": a.fired_at_ms or a.started_at_ms,
             "message": a.message, "paged": a.paged} for a in shown[:limit]]


STANDBY = web.AppKey("standby", ClusterRole)


async def start_standby_http(role: ClusterRole, host: str, port: int) -> web.AppRunner:
    """While an instance waits for its partition's lease: /healthz and /status say "standby"
    (200: a waiting standby is healthy; a supervisor must not restart it) and nothing else
    is served, since the alarm API belongs to the active."""
    async def status(request: web.Request, code: int = 200) -> web.Response:
        return web.json_response({"status": request.app[STANDBY].role,
                                  "cluster": request.app[STANDBY].view()}, status=code)

    async def not_active(request: web.Request) -> web.Response:
        return await status(request, 503)
    app = web.Application()
    app[STANDBY] = role
    app.router.add_get("/healthz", status)
    app.router.add_get("/status", status)
    app.router.add_get("/active", not_active)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def start_http(gateway: GatewayView, host: str, port: int) -> web.AppRunner:
    app = build_app(gateway)
    if app[API_TOKEN].generated and not is_loopback(host):
        # The settings refuse this already; host may come from elsewhere than the settings.
        raise ConfigError("http", [f"http.host: {host!r} is not loopback and no http.token is "
                                   "set: refusing to serve the API to the network"])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner
