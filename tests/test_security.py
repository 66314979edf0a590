"""Security by default (issue 6, item 5): the HTTP API's exposure rules and bearer token, the
reference ACL kept in step with the tested one, and no eval or dynamic import in the code."""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from gateway.config import HttpSettings, is_loopback, load_settings
from gateway.http.app import build_app, start_http
from gateway.http.auth import client_headers
from gateway.runtime.gateway import Gateway
from gateway.tools import alarmcli
from gateway.tools.cli import main
from gateway.tools.top import run_top
from sensors.errors import ConfigError
from sensors.registry import Registry
from tests.support.acl import REFERENCE_ACL
from tests.support.gateway import make_settings
from tests.support.paths import ROOT

TOKEN = "api-token-0123456789abcdef"


# --- configuration: exposed means token -----------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    assert is_loopback(host)
    assert HttpSettings(host=host).token is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.10", "gw.park.example"])
def test_exposed_api_without_token_is_a_config_error(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(ValueError, match=r"not loopback.*http\.token"):
        HttpSettings(host=host)
    assert HttpSettings(host=host, token=SecretStr(TOKEN)).host == host
    assert HttpSettings(host=host, enabled=False).host == host   # nothing is served


def test_config_error_names_the_setting_and_not_the_token(tmp_path: Path) -> None:
    cfg = tmp_path / "pw.yaml"
    cfg.write_text("http:\n  host: 0.0.0.0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert f"{cfg}:2: http:" in str(err.value) or f"{cfg}:1: http:" in str(err.value)
    assert "PARKWATCH_HTTP__TOKEN" in str(err.value)
    cfg.write_text("http:\n  host: 0.0.0.0\n  token: short\n")
    with pytest.raises(ConfigError, match="at least 16") as err:
        load_settings(cfg)
    assert "short" not in str(err.value)


def test_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        HttpSettings(token=SecretStr(TOKEN), token_file=tmp_path / "t")


def test_check_config_refuses_an_open_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PARKWATCH_REGISTRY", str(ROOT / "config/sample-park/registry.yaml"))
    monkeypatch.setenv("PARKWATCH_HTTP__HOST", "0.0.0.0")
    assert main(["check-config"]) == 2
    assert "http.token" in capsys.readouterr().err
    monkeypatch.setenv("PARKWATCH_HTTP__TOKEN", TOKEN)
    assert main(["check-config"]) == 0
    assert TOKEN not in capsys.readouterr().out


# --- the running API ------------------------------------------------------------------------------

async def _gateway(tmp_path: Path, registry: Registry, **http: Any) -> Gateway:
    """A gateway that is not running (no broker needed) with its alarm store open."""
    settings = make_settings(tmp_path, mqtt_url="mqtt://127.0.0.1:1",
                             influx_url="http://127.0.0.1:1",
                             http={"enabled": True, "port": 0, **http},
                             notify={"ack_secret": "ack-secret-for-the-tests"})
    gateway = Gateway(settings=settings, registry=registry)
    assert gateway.alarms is not None
    await gateway.alarms.open()
    return gateway


@pytest.fixture
async def api(tmp_path: Path, sample_registry: Registry) -> AsyncIterator[TestClient[Any, Any]]:
    gateway = await _gateway(tmp_path, sample_registry, token=TOKEN)
    async with TestClient(TestServer(build_app(gateway))) as client:
        yield client
    assert gateway.alarms is not None
    await gateway.alarms.close()


PROTECTED = [("GET", "/status"), ("GET", "/metrics"), ("GET", "/alarms"),
             ("GET", "/alarms/some-id"), ("POST", "/alarms/some-id/ack"),
             ("GET", "/maintenance"), ("POST", "/maintenance"), ("GET", "/no-such-page"),
             ("GET", "/ack/../alarms"), ("GET", "/%61larms")]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789", f"Basic {TOKEN}",
                                    f"Bearer {TOKEN}x", "Bearer"])
async def test_protected_routes_need_the_token(api: TestClient[Any, Any], method: str, path: str,
                                               header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    async with api.request(method, path, headers=headers, json={}) as resp:
        assert resp.status == 401, await resp.text()
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in (await resp.json())["error"]


@pytest.mark.parametrize(("method", "path", "status"),
                         [("GET", "/status", 200), ("GET", "/metrics", 200),
                          ("GET", "/alarms", 200), ("GET", "/maintenance", 200),
                          ("GET", "/alarms/some-id", 404), ("POST", "/alarms/some-id/ack", 400)])
async def test_the_token_opens_them(api: TestClient[Any, Any], method: str, path: str,
                                    status: int) -> None:
    for scheme in ("Bearer", "bearer"):
        async with api.request(method, path, headers={"Authorization": f"{scheme} {TOKEN}"},
                               json={}) as resp:
            assert resp.status == status, await resp.text()


async def test_healthz_and_ack_pages_stay_open(api: TestClient[Any, Any]) -> None:
    async with api.get("/healthz") as resp:
        assert resp.status == 503          # not connected, but answered without a token
        assert "broker_connected" in await resp.json()
    async with api.get("/ack/not-a-real-token") as resp:
        assert resp.status == 404          # the link is the credential: judged by acklinks
        assert "text/html" in resp.headers["Content-Type"]


async def test_refusals_are_logged_without_the_presented_token(
        api: TestClient[Any, Any], caplog: pytest.LogCaptureFixture) -> None:
    async with api.get("/alarms", headers={"Authorization": "Bearer almost-the-token-123"}):
        pass
    assert "refused" in caplog.text
    assert "almost-the-token-123" not in caplog.text


async def test_without_a_token_loopback_stays_open(tmp_path: Path,
                                                   sample_registry: Registry) -> None:
    gateway = await _gateway(tmp_path, sample_registry)
    try:
        async with TestClient(TestServer(build_app(gateway))) as client, \
                client.get("/alarms") as resp:
            assert resp.status == 200
    finally:
        assert gateway.alarms is not None
        await gateway.alarms.close()


async def test_start_http_refuses_to_expose_without_token(tmp_path: Path,
                                                          sample_registry: Registry) -> None:
    gateway = await _gateway(tmp_path, sample_registry)
    try:
        with pytest.raises(ConfigError, match="refusing to serve"):
            await start_http(gateway, "0.0.0.0", 0)
    finally:
        assert gateway.alarms is not None
        await gateway.alarms.close()


async def test_token_file(tmp_path: Path, sample_registry: Registry) -> None:
    token_file = tmp_path / "http.token"
    token_file.write_text(TOKEN + "\n")
    gateway = await _gateway(tmp_path, sample_registry, token_file=str(token_file))
    try:
        async with TestClient(TestServer(build_app(gateway))) as client:
            async with client.get("/status") as resp:
                assert resp.status == 401
            async with client.get("/status", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
        token_file.unlink()
        with pytest.raises(ConfigError, match="cannot read"):
            build_app(gateway)
    finally:
        assert gateway.alarms is not None
        await gateway.alarms.close()


async def test_command_line_clients_send_the_token(api: TestClient[Any, Any],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    base = str(api.make_url("/"))
    with pytest.raises(alarmcli.CliError, match="PARKWATCH_HTTP__TOKEN") as err:
        await _in_thread(alarmcli.call, base, "GET", "/alarms")
    assert err.value.code == alarmcli.EXIT_FAILED
    assert await run_top(base, once=True) == 1

    monkeypatch.setenv("PARKWATCH_HTTP__TOKEN", TOKEN)
    assert await _in_thread(alarmcli.call, base, "GET", "/alarms") == []
    assert await run_top(base, once=True) == 0

    monkeypatch.delenv("PARKWATCH_HTTP__TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    monkeypatch.setenv("PARKWATCH_HTTP__TOKEN_FILE", str(token_file))
    assert client_headers() == {"Authorization": f"Bearer {TOKEN}"}
    assert await _in_thread(alarmcli.call, base, "GET", "/maintenance") == []


async def _in_thread(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


# --- the reference ACL in the docs is the tested one ----------------------------------------------

def test_docs_reference_acl_is_the_tested_acl() -> None:
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- reference-acl -->\s*```text\n(.*?)```", doc, re.S)
    assert blocks, "docs/security.md must hold the ACL after a <!-- reference-acl --> marker"
    assert blocks[0] == REFERENCE_ACL


# --- no eval, no dynamic import -------------------------------------------------------------------

SCANNED = ("gateway", "sensors", "rules")
FORBIDDEN_CALLS = frozenset({"eval", "exec", "compile", "__import__", "import_module",
                             "unsafe_load", "full_load", "load_module", "exec_module",
                             "spec_from_file_location"})
FORBIDDEN_MODULES = frozenset({"pickle", "marshal", "shelve", "dill", "importlib", "runpy"})
#: Submodules of a forbidden package that run no code: reading a distribution's metadata.
HARMLESS_MODULES = frozenset({"importlib.metadata"})
# (file relative to the repository, finding): why it is safe. A dynamic import is allowed only
# with a literal module name ("import_module(literal)"): then no setting can choose the code.
ALLOWED: dict[tuple[str, str], str] = {}


def _findings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else None
            receiver = func.value.id if isinstance(func, ast.Attribute) and \
                isinstance(func.value, ast.Name) else None
            if name in FORBIDDEN_CALLS and receiver != "re":   # re.compile is a regex, not code
                literal = name in ("import_module", "__import__") and len(node.args) == 1 \
                    and isinstance(node.args[0], ast.Constant) and not node.keywords
                found.append((node.lineno, f"{name}(literal)" if literal else name))
            if name == "load" and receiver == "yaml" and not any(
                    k.arg == "Loader" and "Safe" in ast.unparse(k.value) for k in node.keywords):
                found.append((node.lineno, "yaml.load without a safe loader"))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""]
            found.extend((node.lineno, m) for m in modules
                         if m.split(".")[0] in FORBIDDEN_MODULES and m not in HARMLESS_MODULES)
    return found


def test_no_eval_or_dynamic_import_in_the_code() -> None:
    problems = []
    files = [p for d in SCANNED for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 30, "the scan must see the source tree"
    for path in files:
        rel = str(path.relative_to(ROOT))
        for line, name in _findings(path):
            if (rel, name) not in ALLOWED:
                problems.append(f"{rel}:{line}: {name}")
    assert not problems, "code from data is never run; found:\n  " + "\n  ".join(problems)


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import importlib, pickle\nimport yaml\nfrom importlib import import_module\n"
                   "eval('1')\nexec('x=1')\n__import__('os')\nimportlib.import_module('os')\n"
                   "compile('1', 'f', 'eval')\nimportlib.import_module(cfg.module)\n"
                   "yaml.load('a')\nyaml.unsafe_load('a')\n"
                   "yaml.load('a', Loader=yaml.SafeLoader)\nimport re\nre.compile('x')\n")
    names = [name for _, name in _findings(bad)]
    assert names.count("eval") == 1
    assert {"importlib", "pickle", "exec", "__import__(literal)", "compile",
            "import_module(literal)", "import_module",
            "unsafe_load", "yaml.load without a safe loader"} <= set(names)
    assert names.count("yaml.load without a safe loader") == 1
    harmless = tmp_path / "metadata.py"
    harmless.write_text("import importlib.metadata\nfrom importlib.metadata import version\n"
                        "from importlib import util\n")
    assert [name for _, name in _findings(harmless)] == ["importlib"]
