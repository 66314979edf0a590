"""HTTP API for alarms and maintenance modes, added to the status app (:mod:`gateway.http.app`).

::

    GET  /alarms               ?state=active|resolved|all &park &building &device &rule
                               &severity &tenant &since &until (RFC 3339 or epoch ms) &limit
    GET  /alarms/{id}          contract §6 document + "history" + "reclassifications"
    POST /alarms/{id}/ack      {"by", "disposition": real|false_alarm|test|fault, "channel"?}
                               once: 409 with the first acknowledgement if there was one
    POST /alarms/{id}/reclassify  {"by", "disposition", "reason"}: correct an acknowledged
                               alarm's disposition; audited, listed in "reclassifications"
    GET  /maintenance
    POST /maintenance          {"scope": device|zone|building, "target", "mode": test|isolated|none,
                                "until": RFC 3339 | null, "by"}

Every alarm is the contract §6 document, the same as on MQTT and in webhooks. Errors are JSON
``{"error": "..."}``: 400 for a bad request (unknown query parameters included, so a typo never
silently widens a filter), 404 unknown, 409 conflict. The routes only translate HTTP; the
:class:`AlarmService` (gateway/alarms/service.py) owns the alarms. Authentication is the app's
(gateway/http/auth.py): loopback by default, a bearer token otherwise.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, TypeVar

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.errors import CodedError
from rules.alarm import Alarm, AlreadyAcknowledged, Disposition, Maintenance, Severity, iso

MAX_LIMIT = 5000
MAX_TIME_MS = 253_402_300_799_999          # 9999-12-31T23:59:59.999Z
_EPOCH_MS = re.compile(r"-?[0-9]{1,20}")
_LIMIT = re.compile(r"[0-9]{1,6}")
_LIST_PARAMS = frozenset({"state", "park", "building", "device", "rule", "severity", "tenant",
                          "since", "until", "limit"})
_STATES: dict[str, bool | None] = {"active": True, "resolved": False, "all": None}
_SEVERITIES = frozenset(s.value for s in Severity)


class AlarmService(Protocol):
    """What the routes need from the gateway."""

    async def list_alarms(self, *, active: bool | None, since_ms: int | None,
                          until_ms: int | None, park: str | None, building: str | None,
                          device: str | None, rule: str | None, severity: str | None,
                          tenant: str | None, limit: int) -> list[Alarm]:
        """Alarms matching every filter (None = any); same semantics as ``AlarmStore.list``."""
        ...

    async def get_alarm(self, alarm_id: str) -> Alarm | None: ...

    async def alarm_history(self, alarm_id: str) -> list[dict[str, Any]]:
        """Transitions oldest first, as ``AlarmStore.history`` returns them."""
        ...

    async def acknowledge(self, alarm_id: str, *, by: str, disposition: Disposition,
                          channel: str, name: str | None = None) -> Alarm:
        """The acknowledged alarm; KeyError if unknown, AlreadyAcknowledged (a ValueError) if
        someone already did, ValueError if it cannot be acknowledged (pending). A resolved
        alarm nobody acknowledged can still be: it needs a disposition for the false-alarm
        figures."""
        ...

    async def reclassify(self, alarm_id: str, *, by: str, disposition: Disposition,
                         reason: str) -> Alarm:
        """The alarm with its corrected disposition; KeyError if unknown, ValueError if it
        was never acknowledged or already has that disposition."""
        ...

    async def reclassifications(self, alarm_id: str) -> list[dict[str, Any]]:
        """Disposition corrections oldest first, as ``AlarmStore.reclassifications``."""
        ...

    async def set_maintenance(self, *, scope: str, target: str, mode: Maintenance,
                              until_ms: int | None, by: str) -> None:
        """KeyError if the target is unknown, ValueError if the request cannot be honoured."""
        ...

    async def list_maintenance(self) -> list[dict[str, Any]]: ...


ALARM_SERVICE = web.AppKey[AlarmService]("alarm_service")


class AckBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    by: str = Field(min_length=1, max_length=100)
    disposition: Disposition
    channel: str = Field(default="api", min_length=1, max_length=32)


class ReclassifyBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    by: str = Field(min_length=1, max_length=100)
    disposition: Disposition
    reason: str = Field(min_length=1, max_length=500)


class MaintenanceBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    scope: Literal["device", "zone", "building"]
    target: str = Field(min_length=1, max_length=200)
    mode: Maintenance
    until: AwareDatetime | None = None
    by: str = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _until_needs_a_mode(self) -> MaintenanceBody:
        if self.mode is Maintenance.NONE and self.until is not None:
            raise ValueError("'until' makes no sense with mode 'none' (that ends maintenance)")
        return self


class ApiError(CodedError):
    """Answered as ``{"error": message}`` with HTTP status ``code``."""


_Model = TypeVar("_Model", bound=BaseModel)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_errors(handler: _Handler) -> _Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return web.json_response({"error": exc.message}, status=exc.code)
    return wrapped


def add_alarm_routes(app: web.Application, service: AlarmService) -> None:
    app[ALARM_SERVICE] = service
    app.router.add_get("/alarms", _json_errors(_list))
    app.router.add_get("/alarms/{alarm_id}", _json_errors(_show))
    app.router.add_post("/alarms/{alarm_id}/ack", _json_errors(_ack))
    app.router.add_post("/alarms/{alarm_id}/reclassify", _json_errors(_reclassify))
    app.router.add_get("/maintenance", _json_errors(_maintenance_list))
    app.router.add_post("/maintenance", _json_errors(_maintenance_set))


# --- parsing -------------------------------------------------------------------------------------

def parse_time_ms(text: str) -> int:
    """Epoch milliseconds from epoch ms digits or an RFC 3339 time with a zone, within the years
    1970 to 9999 (ValueError otherwise)."""
    # str.isdigit() accepts "²" and other Unicode digits that int() then refuses: ASCII only.
    if _EPOCH_MS.fullmatch(text):
        ms = int(text)
    else:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is neither RFC 3339 nor epoch milliseconds") from None
        if when.tzinfo is None:
            raise ValueError(f"{text!r} has no time zone (add 'Z' or an offset)")
        try:
            ms = int(when.timestamp() * 1000)
        except (OverflowError, ValueError):
            ms = -1
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError(f"{text!r} is outside the years 1970 to 9999")
    return ms


def _query_filters(query: Any) -> dict[str, Any]:
    unknown = sorted(set(query) - _LIST_PARAMS)
    if unknown:
        raise ApiError(400, f"unknown query parameter(s): {', '.join(unknown)}; "
                            f"known: {', '.join(sorted(_LIST_PARAMS))}")
    state = query.get("state", "active")
    if state not in _STATES:
        raise ApiError(400, f"state must be one of active, resolved, all (got {state!r})")
    severity = query.get("severity")
    if severity is not None and severity not in _SEVERITIES:
        raise ApiError(400, f"severity must be one of {', '.join(Severity)} (got {severity!r})")
    filters: dict[str, Any] = {"active": _STATES[state], "severity": severity}
    for key in ("park", "building", "device", "rule", "tenant"):
        filters[key] = query.get(key)
    for key in ("since", "until"):
        raw = query.get(key)
        try:
            filters[f"{key}_ms"] = None if raw is None else parse_time_ms(raw)
        except ValueError as exc:
            raise ApiError(400, f"{key}: {exc}") from None
    raw_limit = query.get("limit", "500")
    if not _LIMIT.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT} (got {raw_limit!r})")
    filters["limit"] = int(raw_limit)
    return filters


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


async def _body(request: web.Request, model: type[_Model]) -> _Model:
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        raise ApiError(400, _validation_message(exc)) from None


# --- handlers ------------------------------------------------------------------------------------

def _document(alarm: Alarm) -> dict[str, Any]:
    # ack_url stays null here: ack links are minted per recipient and travel only inside the
    # notifications (gateway/alarms/acklinks.py); an API caller acknowledges with POST .../ack.
    return alarm.document()


async def _list(request: web.Request) -> web.Response:
    service = request.app[ALARM_SERVICE]
    alarms = await service.list_alarms(**_query_filters(request.query))
    return web.json_response([_document(a) for a in alarms])


async def _show(request: web.Request) -> web.Response:
    service = request.app[ALARM_SERVICE]
    alarm_id = request.match_info["alarm_id"]
    alarm = await service.get_alarm(alarm_id)
    if alarm is None:
        raise ApiError(404, f"no alarm with id {alarm_id!r}")
    history = [{**h, "at": iso(h["at_ms"])} if "at_ms" in h else h
               for h in await service.alarm_history(alarm_id)]
    changes = [{**c, "at": iso(c["at_ms"])} for c in await service.reclassifications(alarm_id)]
    return web.json_response({**_document(alarm), "history": history,
                              "reclassifications": changes})


async def _ack(request: web.Request) -> web.Response:
    service = request.app[ALARM_SERVICE]
    alarm_id = request.match_info["alarm_id"]
    body = await _body(request, AckBody)
    try:
        alarm = await service.acknowledge(alarm_id, by=body.by, disposition=body.disposition,
                                          channel=body.channel)
    except KeyError:
        raise ApiError(404, f"no alarm with id {alarm_id!r}") from None
    except AlreadyAcknowledged as exc:
        # The first acknowledgement stands; the caller sees whose it is.
        first = exc.alarm.document()
        return web.json_response(
            {"error": f"cannot acknowledge alarm {alarm_id!r}: {exc}",
             "acknowledged_by": first["acknowledged_by"],
             "acknowledged_at": first["acknowledged_at"],
             "ack_channel": exc.alarm.ack_channel, "disposition": first["disposition"]},
            status=409)
    except ValueError as exc:
        raise ApiError(409, f"cannot acknowledge alarm {alarm_id!r}: {exc}") from None
    return web.json_response(_document(alarm))


async def _reclassify(request: web.Request) -> web.Response:
    service = request.app[ALARM_SERVICE]
    alarm_id = request.match_info["alarm_id"]
    body = await _body(request, ReclassifyBody)
    try:
        alarm = await service.reclassify(alarm_id, by=body.by, disposition=body.disposition,
                                         reason=body.reason)
    except KeyError:
        raise ApiError(404, f"no alarm with id {alarm_id!r}") from None
    except ValueError as exc:
        raise ApiError(409, f"cannot reclassify alarm {alarm_id!r}: {exc}") from None
    return web.json_response(_document(alarm))


async def _maintenance_list(request: web.Request) -> web.Response:
    return web.json_response(await request.app[ALARM_SERVICE].list_maintenance())


async def _maintenance_set(request: web.Request) -> web.Response:
    service = request.app[ALARM_SERVICE]
    body = await _body(request, MaintenanceBody)
    until_ms = None
    if body.until is not None:
        until_ms = int(body.until.timestamp() * 1000)
        if until_ms <= time.time() * 1000:
            raise ApiError(400, f"until: {body.until.isoformat()} is in the past")
    try:
        await service.set_maintenance(scope=body.scope, target=body.target, mode=body.mode,
                                      until_ms=until_ms, by=body.by)
    except KeyError:
        raise ApiError(404, f"no {body.scope} {body.target!r} in the registry") from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return web.json_response({"scope": body.scope, "target": body.target,
                              "mode": body.mode.value,
                              "until": iso(until_ms) if until_ms is not None else None,
                              "by": body.by})
