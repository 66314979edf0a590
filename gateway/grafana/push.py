"""``parkwatch grafana push``: upsert the InfluxDB datasource, a folder and every dashboard into a
running Grafana through its HTTP API, with a service-account token.

Idempotent by construction: every object has a fixed uid, each is read first and written only
when it differs, so a second push reports ``unchanged`` instead of creating duplicates or new
dashboard versions. The datasource is the exception when it carries a secret (InfluxDB token or
password): Grafana never returns secrets, so we cannot tell whether it changed and write it again.

Objects provisioned from files (read-only in Grafana) are left alone and reported as such: the
provisioning files own them, and Grafana refuses API writes to them anyway.

Secrets (the Grafana token, the InfluxDB token or password) come only from an environment
variable or a file, never from a command-line value (visible in ``ps`` and shell history), and
are never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

# grafana-client and requests are imported where a push talks to Grafana, not here: building the
# ``parkwatch`` parser (``add_arguments``) must not load them for every other command.

DATASOURCE_UID = "parkwatch-influxdb"
DATASOURCE_NAME = "ParkWatch InfluxDB"
FOLDER_UID = "parkwatch"
PUSH_MESSAGE = "parkwatch grafana push"

EXIT_OK = 0
EXIT_USAGE = 2        # bad arguments, missing secret, unreadable dashboards
EXIT_UNREACHABLE = 3  # no answer from Grafana
EXIT_AUTH = 4         # token rejected (401) or not allowed (403)
EXIT_GRAFANA = 5      # Grafana answered with another error

# Keys of a dashboard that Grafana manages itself; they never count as a difference.
_VOLATILE_DASHBOARD_KEYS = ("id", "version")
# Datasource keys we set; the rest of Grafana's answer (id, orgId, typeLogoUrl, ...) is its own.
_DATASOURCE_KEYS = ("name", "type", "access", "url", "database", "user", "basicAuth",
                    "isDefault", "jsonData")

T = TypeVar("T")


class PushError(Exception):
    """A push that cannot go on; the message is for the park's IT person, the code for scripts."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class PushOutcome:
    kind: str      # datasource | folder | dashboard
    name: str
    uid: str
    action: str    # created | updated | unchanged | left alone (provisioned)

    def line(self) -> str:
        return f"{self.kind:<10} {self.name} ({self.uid}): {self.action}"


@dataclass(frozen=True, slots=True)
class Datasource:
    """The InfluxDB datasource as Grafana should hold it, secrets included (never printed)."""

    url: str
    database: str
    influx_token: str | None = None
    influx_user: str | None = None
    influx_password: str | None = None

    def body(self) -> dict[str, Any]:
        json_data: dict[str, Any] = {"version": "InfluxQL", "dbName": self.database,
                                     "httpMode": "GET"}
        secure: dict[str, str] = {}
        if self.influx_token is not None:
            # InfluxDB 2.x answers InfluxQL through its DBRP mapping and wants the token in this
            # header; Grafana's InfluxQL mode has no token field of its own.
            json_data["httpHeaderName1"] = "Authorization"
            secure["httpHeaderValue1"] = f"Token {self.influx_token}"
        if self.influx_password is not None:
            secure["password"] = self.influx_password
        body: dict[str, Any] = {
            "uid": DATASOURCE_UID, "name": DATASOURCE_NAME, "type": "influxdb",
            "access": "proxy", "url": self.url,
            # Grafana before 8.x read the top-level key, later versions jsonData.dbName.
            "database": self.database, "user": self.influx_user or "",
            "basicAuth": False, "isDefault": False, "jsonData": json_data,
        }
        if secure:
            body["secureJsonData"] = secure
        return body


# --- command line -------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True,
                        help="Grafana's address, e.g. https://grafana.park.example or "
                             "http://127.0.0.1:3000 (no credentials in it)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token-env", default="GRAFANA_TOKEN", metavar="VAR",
                       help="environment variable holding the service-account token "
                            "(default GRAFANA_TOKEN)")
    token.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                       help="file holding the service-account token")
    parser.add_argument("--folder", default="ParkWatch",
                        help="folder title for the dashboards (default ParkWatch; uid "
                             f"{FOLDER_UID!r}, so renaming it here renames it in Grafana)")
    parser.add_argument("--dashboards", type=Path, default=None, metavar="DIR",
                        help="folder of dashboard *.json files (default: generate them)")
    parser.add_argument("--lang", choices=["en", "zh-CN"], default="en",
                        help="language of the generated dashboards (default en; the compose "
                             "stack provisions zh-CN)")
    parser.add_argument("--influx-url", default="http://127.0.0.1:8086",
                        help="InfluxDB as Grafana's server reaches it (default "
                             "http://127.0.0.1:8086)")
    parser.add_argument("--database", default="parkwatch",
                        help="InfluxQL database: the 1.x database or the 2.x DBRP database "
                             "(default parkwatch)")
    influx_token = parser.add_mutually_exclusive_group()
    influx_token.add_argument("--influx-token-env", default=None, metavar="VAR",
                              help="InfluxDB 2.x: variable holding a read token")
    influx_token.add_argument("--influx-token-file", type=Path, default=None, metavar="FILE",
                              help="InfluxDB 2.x: file holding a read token")
    parser.add_argument("--influx-user", default=None,
                        help="InfluxDB 1.x: user name (with --influx-password-env/-file)")
    influx_pw = parser.add_mutually_exclusive_group()
    influx_pw.add_argument("--influx-password-env", default=None, metavar="VAR",
                           help="InfluxDB 1.x: variable holding the password")
    influx_pw.add_argument("--influx-password-file", type=Path, default=None, metavar="FILE",
                           help="InfluxDB 1.x: file holding the password")
    parser.add_argument("--ca-file", type=Path, default=None,
                        help="CA certificate to trust for an https:// Grafana with a private CA")
    parser.add_argument("--timeout-s", type=float, default=10.0,
                        help="per-request timeout in seconds (default 10)")


def run(args: argparse.Namespace) -> int:
    try:
        token = _secret("Grafana token", args.token_env, args.token_file, required=True)
        assert token is not None
        datasource = _datasource(args)
        dashboards = load_dashboards(args.dashboards, args.lang)
        with GrafanaSession(args.url, token, ca_file=args.ca_file,
                            timeout_s=args.timeout_s) as grafana:
            outcomes = push(grafana, datasource, dashboards, folder_title=args.folder,
                            report=lambda o: print(o.line(), flush=True))
    except PushError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    summary = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
    print(f"pushed to {args.url}: {summary}")
    return EXIT_OK


def _datasource(args: argparse.Namespace) -> Datasource:
    parts = urlsplit(args.influx_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PushError(f"--influx-url must be an http:// or https:// URL, got "
                        f"{args.influx_url!r}", EXIT_USAGE)
    if parts.username is not None or parts.password is not None:
        raise PushError("--influx-url must not carry credentials: use --influx-token-env/-file "
                        "or --influx-user with --influx-password-env/-file", EXIT_USAGE)
    influx_token = _secret("InfluxDB token", args.influx_token_env, args.influx_token_file,
                           required=args.influx_token_env is not None)
    password = _secret("InfluxDB password", args.influx_password_env, args.influx_password_file,
                       required=args.influx_password_env is not None)
    if password is not None and args.influx_user is None:
        raise PushError("an InfluxDB password needs --influx-user", EXIT_USAGE)
    return Datasource(url=args.influx_url.rstrip("/"), database=args.database,
                      influx_token=influx_token, influx_user=args.influx_user,
                      influx_password=password)


def _secret(what: str, env_var: str | None, path: Path | None, *, required: bool) -> str | None:
    """A secret from a file (first line, surrounding whitespace dropped) or an env variable."""
    if path is not None:
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PushError(f"cannot read the {what} from {path}: {exc.strerror}",
                            EXIT_USAGE) from None
        if not value:
            raise PushError(f"{path} is empty; it should hold the {what}", EXIT_USAGE)
        return value
    value = os.environ.get(env_var, "").strip() if env_var else ""
    if value:
        return value
    if required:
        raise PushError(f"no {what}: set the environment variable {env_var} or use the "
                        "matching --...-file option", EXIT_USAGE)
    return None


# --- dashboards ---------------------------------------------------------------------------------

def load_dashboards(directory: Path | None, lang: str = "en") -> dict[str, dict[str, Any]]:
    """Dashboards by file stem: the *.json files of ``directory``, or freshly generated in
    ``lang`` (a folder's files are pushed as they are)."""
    if directory is None:
        from gateway.grafana.dashboards import build_all, schema

        generated: dict[str, dict[str, Any]] = build_all(schema.DEFAULT_RULES, lang)
        return dict(sorted(generated.items()))
    if not directory.is_dir():
        raise PushError(f"--dashboards {directory}: not a folder", EXIT_USAGE)
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PushError(f"{path}: not readable JSON: {exc}", EXIT_USAGE) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("title"), str):
            raise PushError(f"{path}: not a dashboard (a JSON object with a title)", EXIT_USAGE)
        out[path.stem] = doc
    if not out:
        raise PushError(f"--dashboards {directory}: no *.json files in it", EXIT_USAGE)
    return out


# --- talking to Grafana -------------------------------------------------------------------------

class GrafanaSession:
    """The handful of Grafana API calls a push makes, each with errors a person can act on.

    grafana-client is untyped, so it is held as ``Any`` here and nowhere else.
    """

    def __init__(self, url: str, token: str, *, ca_file: Path | None = None,
                 timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PushError(f"--url must be an http:// or https:// URL, got {url!r}", EXIT_USAGE)
        if parts.username is not None or parts.password is not None:
            raise PushError("--url must not carry credentials; the token comes from "
                            "--token-env or --token-file", EXIT_USAGE)
        try:
            port = parts.port
        except ValueError:
            raise PushError(f"--url has an invalid port: {url!r}", EXIT_USAGE) from None
        prefix = parts.path.strip("/")
        self.url = url
        from grafana_client.api import GrafanaApi

        # grafana-client joins "{host}/{prefix}api", so a sub-path needs its trailing slash.
        self._api: Any = GrafanaApi(
            auth=token, host=parts.hostname, port=port,
            url_path_prefix=f"{prefix}/" if prefix else "", protocol=parts.scheme,
            verify=str(ca_file) if ca_file else True, timeout=timeout_s)

    def close(self) -> None:
        """Close the pooled HTTP connections (keep-alive sockets would otherwise linger)."""
        self._api.client.s.close()

    def __enter__(self) -> GrafanaSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_health(self) -> None:
        # /api/health needs no token: "unreachable" and "token rejected" stay separate errors.
        health = self._call("checking /api/health", lambda: self._api.client.GET("/health"))
        if not isinstance(health, Mapping) or "database" not in health:
            raise PushError(f"{self.url} answered /api/health, but not like Grafana does; is "
                            "this the Grafana address?", EXIT_GRAFANA)

    def get_datasource(self, uid: str) -> dict[str, Any] | None:
        return self._lookup("reading the datasource",
                            lambda: self._api.datasource.get_datasource_by_uid(uid))

    def create_datasource(self, body: dict[str, Any]) -> None:
        self._call("creating the datasource",
                   lambda: self._api.datasource.create_datasource(body))

    def update_datasource(self, uid: str, body: dict[str, Any]) -> None:
        self._call("updating the datasource",
                   lambda: self._api.datasource.update_datasource_by_uid(uid, body))

    def get_folder(self, uid: str) -> dict[str, Any] | None:
        return self._lookup("reading the folder", lambda: self._api.folder.get_folder(uid))

    def create_folder(self, uid: str, title: str) -> None:
        self._call("creating the folder",
                   lambda: self._api.folder.create_folder(title=title, uid=uid))

    def rename_folder(self, uid: str, title: str) -> None:
        self._call("renaming the folder",
                   lambda: self._api.folder.update_folder(uid, title=title, overwrite=True))

    def get_dashboard(self, uid: str) -> dict[str, Any] | None:
        return self._lookup(f"reading dashboard {uid}",
                            lambda: self._api.dashboard.get_dashboard(uid))

    def save_dashboard(self, body: dict[str, Any]) -> None:
        uid = body["dashboard"]["uid"]
        self._call(f"saving dashboard {uid}", lambda: self._api.dashboard.update_dashboard(body))

    def _lookup(self, doing: str, fn: Callable[[], Any]) -> dict[str, Any] | None:
        """Like :meth:`_call`, but a 404 means "not there yet" instead of an error."""
        from grafana_client.client import GrafanaClientError

        def attempt() -> Any:
            try:
                return fn()
            except GrafanaClientError as exc:
                if exc.status_code == 404:
                    return None
                raise

        found = self._call(doing, attempt)
        if found is not None and not isinstance(found, dict):
            raise PushError(f"Grafana at {self.url} answered {doing} with something other than "
                            "a JSON object", EXIT_GRAFANA)
        return found

    def _call(self, doing: str, fn: Callable[[], T]) -> T:
        """Run one API call; turn grafana-client's exceptions into messages and exit codes."""
        import requests.exceptions
        from grafana_client.client import (
            GrafanaClientError,
            GrafanaException,
            GrafanaUnauthorizedError,
        )

        url = self.url
        try:
            return fn()
        except GrafanaUnauthorizedError:
            raise PushError(f"Grafana at {url} rejected the token (401 Unauthorized) while "
                            f"{doing}: check that the service-account token is right and not "
                            "expired or revoked", EXIT_AUTH) from None
        except requests.exceptions.Timeout:
            raise PushError(f"Grafana at {url} is unreachable: no answer within the timeout "
                            f"while {doing}", EXIT_UNREACHABLE) from None
        except GrafanaClientError as exc:
            if exc.status_code == 403:
                raise PushError(f"Grafana at {url} accepted the token but refused {doing} "
                                "(403 Forbidden): give the service account the Admin role (it "
                                "writes a datasource)", EXIT_AUTH) from None
            raise PushError(f"Grafana at {url} refused {doing}: {exc.message}",
                            EXIT_GRAFANA) from None
        except GrafanaException as exc:
            raise PushError(f"Grafana at {url} failed while {doing}: {exc.message}",
                            EXIT_GRAFANA) from None
        except requests.exceptions.RequestException as exc:
            # Connection refused, DNS failure, TLS failure: the request never got an answer.
            raise PushError(f"Grafana at {url} is unreachable while {doing}: "
                            f"{type(exc).__name__}: {exc}", EXIT_UNREACHABLE) from None


def push(grafana: GrafanaSession, datasource: Datasource,
         dashboards: Mapping[str, dict[str, Any]], *, folder_title: str = "ParkWatch",
         report: Callable[[PushOutcome], None] = lambda o: None) -> list[PushOutcome]:
    """Upsert the datasource, the folder, then each dashboard; ``report`` hears each result."""
    grafana.check_health()
    outcomes: list[PushOutcome] = []

    def done(outcome: PushOutcome) -> None:
        outcomes.append(outcome)
        report(outcome)

    done(_upsert_datasource(grafana, datasource))
    done(_upsert_folder(grafana, folder_title))
    for stem, dashboard in dashboards.items():
        done(_upsert_dashboard(grafana, stem, dashboard))
    return outcomes


def _upsert_datasource(grafana: GrafanaSession, ds: Datasource) -> PushOutcome:
    body = ds.body()
    existing = grafana.get_datasource(DATASOURCE_UID)
    outcome = PushOutcome("datasource", DATASOURCE_NAME, DATASOURCE_UID, "created")
    if existing is None:
        grafana.create_datasource(body)
        return outcome
    if existing.get("readOnly"):
        return _replace(outcome, "left alone (provisioned)")
    same = all(existing.get(k) == body[k] for k in _DATASOURCE_KEYS)
    if same and "secureJsonData" not in body:
        return _replace(outcome, "unchanged")
    grafana.update_datasource(DATASOURCE_UID, body)
    return _replace(outcome, "updated")


def _upsert_folder(grafana: GrafanaSession, title: str) -> PushOutcome:
    existing = grafana.get_folder(FOLDER_UID)
    outcome = PushOutcome("folder", title, FOLDER_UID, "created")
    if existing is None:
        grafana.create_folder(FOLDER_UID, title)
        return outcome
    if existing.get("title") == title:
        return _replace(outcome, "unchanged")
    grafana.rename_folder(FOLDER_UID, title)
    return _replace(outcome, "updated")


def _upsert_dashboard(grafana: GrafanaSession, stem: str, dashboard: dict[str, Any]) -> PushOutcome:
    uid = str(dashboard.get("uid") or f"parkwatch-{stem}"[:40])
    wanted = {k: v for k, v in dashboard.items() if k not in _VOLATILE_DASHBOARD_KEYS}
    wanted["uid"] = uid
    outcome = PushOutcome("dashboard", str(wanted.get("title", stem)), uid, "created")
    existing = grafana.get_dashboard(uid)
    if existing is not None:
        meta = existing.get("meta") or {}
        if meta.get("provisioned"):
            return _replace(outcome, "left alone (provisioned)")
        stored = {k: v for k, v in (existing.get("dashboard") or {}).items()
                  if k not in _VOLATILE_DASHBOARD_KEYS}
        if stored == wanted and meta.get("folderUid") == FOLDER_UID:
            return _replace(outcome, "unchanged")
        outcome = _replace(outcome, "updated")
    # id None + overwrite: Grafana matches on the uid and replaces whatever version it holds.
    grafana.save_dashboard({"dashboard": {**wanted, "id": None}, "folderUid": FOLDER_UID,
                            "overwrite": True, "message": PUSH_MESSAGE})
    return outcome


def _replace(outcome: PushOutcome, action: str) -> PushOutcome:
    return PushOutcome(outcome.kind, outcome.name, outcome.uid, action)
