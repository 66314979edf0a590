"""The tenant register, read-only (docs/configuration.md, "Tenant register")::

    GET  /tenants          every tenant of the register, in file order
    GET  /tenants/{id}     one tenant; 404 if the register has no such id

Served only when ``tenants`` is configured. The register is a file the park office edits; the
API never changes it. It carries the names and phones of each tenant's 消防安全责任人 and
消防安全管理人, so it sits behind the same guard as the alarm API (gateway/http/auth.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sensors.tenants import Tenant, TenantRegister

TENANT_REGISTER = web.AppKey("tenant_register", TenantRegister)


def tenant_document(tenant: Tenant) -> dict[str, Any]:
    """A tenant as JSON: the register's keys, plus ``hazard_code`` (甲..戊 as A..E)."""
    return {**tenant.model_dump(mode="json"), "hazard_code": tenant.hazard_code}


def add_tenant_routes(app: web.Application, register: TenantRegister) -> None:
    app[TENANT_REGISTER] = register
    app.router.add_get("/tenants", _list)
    app.router.add_get("/tenants/{tenant_id}", _show)


async def _list(request: web.Request) -> web.Response:
    return web.json_response([tenant_document(t) for t in request.app[TENANT_REGISTER]])


async def _show(request: web.Request) -> web.Response:
    tenant_id = request.match_info["tenant_id"]
    tenant = request.app[TENANT_REGISTER].get(tenant_id)
    if tenant is None:
        return web.json_response({"error": f"no tenant with id {tenant_id!r}"}, status=404)
    return web.json_response(tenant_document(tenant))
