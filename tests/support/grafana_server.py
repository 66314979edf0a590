"""A local fake of the parts of Grafana's HTTP API that ``parkwatch grafana push`` uses.

It answers like Grafana 11 does for these endpoints (status codes, error documents, response
shapes) and records every request exactly as it arrived, headers included, so tests can check
what a real Grafana would have been told::

    with FakeGrafana(token="glsa_...") as grafana:
        ... push to grafana.url ...
        assert grafana.requests[-1].headers["Authorization"] == "Bearer glsa_..."

Endpoints: ``GET /api/health`` (no auth), ``GET|POST /api/datasources``,
``GET|PUT /api/datasources/uid/{uid}``, ``GET|POST /api/folders``, ``GET|PUT /api/folders/{uid}``,
``GET /api/dashboards/uid/{uid}``, ``POST /api/dashboards/db``. Everything but /api/health needs
``Authorization: Bearer <token>``; a ``Viewer`` token gets 403 on writes.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Reply = tuple[int, Any]


@dataclass(frozen=True, slots=True)
class Captured:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None


@dataclass
class GrafanaState:
    """What the fake Grafana holds: datasources, folders and dashboards by uid."""

    datasources: dict[str, dict[str, Any]] = field(default_factory=dict)
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)  # uid -> {dashboard, meta}
    next_id: int = 1

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


_DS_UID = re.compile(r"^/api/datasources/uid/([^/]+)$")
_FOLDER = re.compile(r"^/api/folders/([^/]+)$")
_DASH_UID = re.compile(r"^/api/dashboards/uid/([^/]+)$")
_INVALID_KEY = {"extra": None, "message": "Invalid API key", "messageId": "api-key.invalid",
                "statusCode": 401, "traceID": ""}


class FakeGrafana:
    """The fake server on a free loopback port, served from a thread."""

    def __init__(self, *, token: str, role: Literal["Admin", "Editor", "Viewer"] = "Admin",
                 version: str = "11.6.0") -> None:
        self.token = token
        self.role = role
        self.version = version
        self.state = GrafanaState()
        self.requests: list[Captured] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeGrafana:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def writes(self) -> list[Captured]:
        return [r for r in self.requests if r.method in ("POST", "PUT", "DELETE", "PATCH")]

    # --- request handling (called from the server thread, under the lock) --------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Reply:
        with self._lock:
            self.requests.append(Captured(method, path, headers, copy.deepcopy(body)))
            if path == "/api/health" and method == "GET":
                return 200, {"commit": "0000000", "database": "ok", "version": self.version}
            if headers.get("Authorization") != f"Bearer {self.token}":
                return 401, _INVALID_KEY
            if method != "GET" and self.role == "Viewer":
                return 403, {"message": "You'll need additional permissions to perform this "
                                        "action. Permissions needed: any of datasources:write"}
            return self._route(method, path, body)

    def _route(self, method: str, path: str, body: Any) -> Reply:
        if path == "/api/datasources":
            return self._create_datasource(body) if method == "POST" else (
                200, [self._ds_view(d) for d in self.state.datasources.values()])
        if m := _DS_UID.match(path):
            return self._get_datasource(m[1]) if method == "GET" else self._put_datasource(
                m[1], body)
        if path == "/api/folders":
            return self._create_folder(body) if method == "POST" else (
                200, [{"id": f["id"], "uid": f["uid"], "title": f["title"]}
                      for f in self.state.folders.values()])
        if m := _FOLDER.match(path):
            return self._get_folder(m[1]) if method == "GET" else self._put_folder(m[1], body)
        if (m := _DASH_UID.match(path)) and method == "GET":
            found = self.state.dashboards.get(m[1])
            return (200, copy.deepcopy(found)) if found else (
                404, {"message": "Dashboard not found"})
        if path == "/api/dashboards/db" and method == "POST":
            return self._save_dashboard(body)
        return 404, {"message": "Not found"}

    # datasources

    @staticmethod
    def _ds_view(ds: dict[str, Any]) -> dict[str, Any]:
        # Grafana never returns secrets, only which secret fields are set.
        view = {k: copy.deepcopy(v) for k, v in ds.items() if k != "secureJsonData"}
        view["secureJsonFields"] = {k: True for k in ds.get("secureJsonData", {})}
        return view

    def _get_datasource(self, uid: str) -> Reply:
        ds = self.state.datasources.get(uid)
        return (200, self._ds_view(ds)) if ds else (404, {"message": "Data source not found"})

    def _create_datasource(self, body: Any) -> Reply:
        if not isinstance(body, dict) or not body.get("name") or not body.get("type"):
            return 400, {"message": "bad request data"}
        if any(d["name"] == body["name"] for d in self.state.datasources.values()):
            return 409, {"message": "data source with the same name already exists"}
        uid = body.get("uid") or f"ds{self.state.next_id}"
        if uid in self.state.datasources:
            return 409, {"message": "data source with the same uid already exists"}
        ds = {"id": self.state.new_id(), "uid": uid, "orgId": 1, "name": body["name"],
              "type": body["type"], "typeLogoUrl": "", "access": body.get("access", "proxy"),
              "url": body.get("url", ""), "user": body.get("user", ""),
              "database": body.get("database", ""), "basicAuth": body.get("basicAuth", False),
              "basicAuthUser": "", "withCredentials": False,
              "isDefault": body.get("isDefault", False), "jsonData": body.get("jsonData", {}),
              "secureJsonData": dict(body.get("secureJsonData") or {}), "version": 1,
              "readOnly": False}
        self.state.datasources[uid] = ds
        return 200, {"datasource": self._ds_view(ds), "id": ds["id"], "message":
                     "Datasource added", "name": ds["name"]}

    def _put_datasource(self, uid: str, body: Any) -> Reply:
        ds = self.state.datasources.get(uid)
        if ds is None:
            return 404, {"message": "Data source not found"}
        if ds["readOnly"]:
            return 403, {"message": "Cannot update read-only data source"}
        for key in ("name", "type", "access", "url", "user", "database", "basicAuth",
                    "isDefault", "jsonData"):
            if key in body:
                ds[key] = copy.deepcopy(body[key])
        # Secrets not sent again are kept, as Grafana does.
        ds["secureJsonData"].update(body.get("secureJsonData") or {})
        ds["version"] += 1
        return 200, {"datasource": self._ds_view(ds), "id": ds["id"],
                     "message": "Datasource updated", "name": ds["name"]}

    # folders

    def _get_folder(self, uid: str) -> Reply:
        folder = self.state.folders.get(uid)
        return (200, dict(folder)) if folder else (404, {"message": "folder not found"})

    def _create_folder(self, body: Any) -> Reply:
        title = body.get("title") if isinstance(body, dict) else None
        if not title:
            return 400, {"message": "folder title cannot be empty"}
        uid = body.get("uid") or f"f{self.state.next_id}"
        if uid in self.state.folders:
            return 409, {"message": "a folder with the same uid already exists"}
        if any(f["title"] == title for f in self.state.folders.values()):
            return 409, {"message": "a folder or dashboard in the general folder with the same "
                                    "name already exists"}
        folder = {"id": self.state.new_id(), "uid": uid, "title": title,
                  "url": f"/dashboards/f/{uid}/", "hasAcl": False, "canSave": True,
                  "canEdit": True, "canAdmin": True, "version": 1}
        self.state.folders[uid] = folder
        return 200, dict(folder)

    def _put_folder(self, uid: str, body: Any) -> Reply:
        folder = self.state.folders.get(uid)
        if folder is None:
            return 404, {"message": "folder not found"}
        if not body.get("overwrite") and body.get("version") != folder["version"]:
            return 412, {"message": "the folder has been changed by someone else"}
        folder["title"] = body.get("title", folder["title"])
        folder["version"] += 1
        return 200, dict(folder)

    # dashboards

    def _save_dashboard(self, body: Any) -> Reply:
        dash = body.get("dashboard") if isinstance(body, dict) else None
        if not isinstance(dash, dict) or not dash.get("title"):
            return 400, {"message": "Dashboard title cannot be empty"}
        folder_uid = body.get("folderUid") or ""
        if folder_uid and folder_uid not in self.state.folders:
            return 400, {"message": "folder not found"}
        uid = dash.get("uid") or f"d{self.state.next_id}"
        old = self.state.dashboards.get(uid)
        if old is not None:
            if old["meta"].get("provisioned"):
                return 400, {"message": "Cannot save provisioned dashboard"}
            if not body.get("overwrite") and dash.get("version") != old["dashboard"]["version"]:
                return 412, {"status": "version-mismatch",
                             "message": "The dashboard has been changed by someone else"}
        ident = old["dashboard"]["id"] if old else self.state.new_id()
        version = old["dashboard"]["version"] + 1 if old else 1
        stored = {**copy.deepcopy(dash), "id": ident, "uid": uid, "version": version}
        folder = self.state.folders.get(folder_uid)
        slug = re.sub(r"[^a-z0-9]+", "-", dash["title"].lower()).strip("-")
        self.state.dashboards[uid] = {
            "dashboard": stored,
            "meta": {"type": "db", "slug": slug, "url": f"/d/{uid}/{slug}", "version": version,
                     "folderUid": folder_uid, "folderTitle": folder["title"] if folder
                     else "General", "provisioned": False}}
        return 200, {"id": ident, "uid": uid, "url": f"/d/{uid}/{slug}", "status": "success",
                     "version": version, "slug": slug}


def _handler_for(fake: FakeGrafana) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                self._reply(400, {"message": "bad request data"})
                return
            headers = {k: v for k, v in self.headers.items()}
            status, doc = fake.handle(self.command, self.path, headers, body)
            self._reply(status, doc)

        def _reply(self, status: int, doc: Any) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            del format, args  # keep test output quiet

    return Handler
