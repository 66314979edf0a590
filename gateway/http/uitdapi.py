"""The UITD API (GB/T 26875.3, docs/uitd.md)::

    GET  /uitd                      the mapped UITDs: address, panel, connected, last frame,
                                    clock, last duty check asked / answered
    POST /uitd/{panel}/duty-check   {"by"?}: send a duty check (查岗, command 91) to the panel's
                                    UITD; answers with the time asked. The UITD's answer (type 24
                                    bit 5) shows as ``duty_check_answered_ms`` in GET /uitd.

The POST changes state on a device, so it is guarded like the other POST routes: a JSON body
(``Content-Type: application/json``) and the bearer token when one is set (gateway/http/auth.py).
The HTTP layer sees the server only through :class:`UitdControl`.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from aiohttp import web

log = logging.getLogger(__name__)


class UitdControl(Protocol):
    """What the API may do with the UITD server (gateway/ingest/uitd/server.py has it)."""

    def uitds(self) -> list[dict[str, Any]]: ...

    def duty_check(self, panel: str) -> dict[str, Any]: ...


UITD_CONTROL = web.AppKey("uitd_control", UitdControl)


def add_uitd_routes(app: web.Application, control: UitdControl) -> None:
    app[UITD_CONTROL] = control
    app.router.add_get("/uitd", _list)
    app.router.add_post("/uitd/{panel}/duty-check", _duty_check)


async def _list(request: web.Request) -> web.Response:
    return web.json_response(request.app[UITD_CONTROL].uitds())


async def _duty_check(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        return web.json_response({"error": "send a JSON body (Content-Type: application/json)"},
                                 status=415)
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return web.json_response({"error": "body is not JSON"}, status=400)
    if not isinstance(body, dict):
        return web.json_response({"error": "body must be a JSON object"}, status=400)
    panel = request.match_info["panel"]
    try:
        state = request.app[UITD_CONTROL].duty_check(panel)
    except LookupError as exc:
        return web.json_response({"error": str(exc)}, status=404)
    except ConnectionError as exc:
        return web.json_response({"error": str(exc)}, status=409)
    log.info("duty check sent to panel %s by %s", panel, str(body.get("by", "api"))[:64])
    return web.json_response(state, status=202)
