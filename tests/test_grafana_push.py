"""``parkwatch grafana push`` against a local fake Grafana (tests/support/grafana_server.py).

The fake records each request as Grafana would receive it, so these tests check the real
bodies and headers grafana-client sends, the idempotency of a second push, the error messages
and exit codes, and that no secret ever reaches the output or the logs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from gateway.grafana import push
from gateway.grafana.dashboards import build_all
from gateway.tools.cli import main
from gateway.tools.devservices import free_port
from tests.support.grafana_server import FakeGrafana

TOKEN = "glsa_TestServiceAccountToken_0123456789abcdef"
INFLUX_TOKEN = "influx-Read-Token-Only-For-Grafana-9876543210=="
INFLUX_PASSWORD = "influx-v1-Password-4321"
SECRETS = (TOKEN, INFLUX_TOKEN, INFLUX_PASSWORD)


def _dashboards(tmp_path: Path, titles: dict[str, str] | None = None) -> Path:
    folder = tmp_path / "dashboards"
    folder.mkdir(exist_ok=True)
    for stem, title in (titles or {"overview": "Park overview",
                                   "health": "ParkWatch health"}).items():
        doc = {"uid": f"pw-{stem}", "title": title, "schemaVersion": 39, "tags": ["parkwatch"],
               "panels": [{"id": 1, "type": "timeseries", "title": "ingest",
                           "datasource": {"type": "influxdb", "uid": push.DATASOURCE_UID},
                           "targets": [{"refId": "A", "rawQuery": True,
                                        "query": "SELECT count(*) FROM gateway "
                                                 "WHERE $timeFilter"}]}]}
        (folder / f"{stem}.json").write_text(json.dumps(doc, indent=2))
    return folder


@pytest.fixture
def grafana() -> Any:
    with FakeGrafana(token=TOKEN) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _secrets_in_env(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    monkeypatch.setenv("PW_INFLUX_TOKEN", INFLUX_TOKEN)
    monkeypatch.setenv("PW_INFLUX_PASSWORD", INFLUX_PASSWORD)
    # Everything any library logs, down to DEBUG, is captured and checked for secrets.
    caplog.set_level(logging.DEBUG)


def _push(url: str, dashboards: Path, *extra: str) -> int:
    return main(["grafana", "push", "--url", url, "--dashboards", str(dashboards),
                 "--influx-url", "http://influxdb:8086", *extra])


def _assert_no_secret_leaked(capsys: pytest.CaptureFixture[str],
                             caplog: pytest.LogCaptureFixture) -> tuple[str, str]:
    out, err = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in out
        assert secret not in err
        assert secret not in caplog.text
    return out, err


def test_push_creates_datasource_folder_and_dashboards(
        grafana: FakeGrafana, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    rc = _push(grafana.url, _dashboards(tmp_path), "--influx-token-env", "PW_INFLUX_TOKEN")

    out, err = _assert_no_secret_leaked(capsys, caplog)
    assert rc == push.EXIT_OK, err
    for captured in grafana.requests:
        if captured.path != "/api/health":
            assert captured.headers["Authorization"] == f"Bearer {TOKEN}"
    writes = [(w.method, w.path) for w in grafana.writes()]
    assert writes == [("POST", "/api/datasources"), ("POST", "/api/folders"),
                      ("POST", "/api/dashboards/db"), ("POST", "/api/dashboards/db")]

    ds_body = grafana.writes()[0].body
    assert ds_body == {
        "uid": "parkwatch-influxdb", "name": "ParkWatch InfluxDB", "type": "influxdb",
        "access": "proxy", "url": "http://influxdb:8086", "database": "parkwatch", "user": "",
        "basicAuth": False, "isDefault": False,
        "jsonData": {"version": "InfluxQL", "dbName": "parkwatch", "httpMode": "GET",
                     "httpHeaderName1": "Authorization"},
        "secureJsonData": {"httpHeaderValue1": f"Token {INFLUX_TOKEN}"},
    }
    assert grafana.writes()[1].body == {"title": "ParkWatch", "uid": "parkwatch"}
    saved = [w.body for w in grafana.writes()[2:]]
    assert [b["dashboard"]["uid"] for b in saved] == ["pw-health", "pw-overview"]
    for body in saved:
        assert body["folderUid"] == "parkwatch"
        assert body["overwrite"] is True
        assert body["dashboard"]["id"] is None
    assert grafana.state.dashboards["pw-overview"]["meta"]["folderTitle"] == "ParkWatch"

    assert "datasource ParkWatch InfluxDB (parkwatch-influxdb): created" in out
    assert "folder     ParkWatch (parkwatch): created" in out
    assert "dashboard  Park overview (pw-overview): created" in out
    assert out.strip().endswith("4 created")


def test_second_push_changes_nothing_and_a_changed_dashboard_is_updated(
        grafana: FakeGrafana, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    dashboards = _dashboards(tmp_path)
    assert _push(grafana.url, dashboards) == push.EXIT_OK
    first_writes = len(grafana.writes())

    assert _push(grafana.url, dashboards) == push.EXIT_OK
    out, _ = _assert_no_secret_leaked(capsys, caplog)
    assert len(grafana.writes()) == first_writes  # nothing written the second time
    assert out.strip().endswith("4 unchanged")
    assert len(grafana.state.datasources) == 1
    assert len(grafana.state.folders) == 1
    assert sorted(grafana.state.dashboards) == ["pw-health", "pw-overview"]
    assert grafana.state.dashboards["pw-overview"]["dashboard"]["version"] == 1

    # A changed dashboard and a renamed folder are updates of the same objects, not new ones.
    _dashboards(tmp_path, {"overview": "Park overview (new)"})
    assert _push(grafana.url, dashboards, "--folder", "Fire safety") == push.EXIT_OK
    out, _ = _assert_no_secret_leaked(capsys, caplog)
    assert "dashboard  Park overview (new) (pw-overview): updated" in out
    assert "dashboard  ParkWatch health (pw-health): unchanged" in out
    assert "folder     Fire safety (parkwatch): updated" in out
    assert sorted(grafana.state.dashboards) == ["pw-health", "pw-overview"]
    assert grafana.state.dashboards["pw-overview"]["dashboard"]["version"] == 2
    assert [f["title"] for f in grafana.state.folders.values()] == ["Fire safety"]


def test_datasource_with_a_secret_is_updated_in_place(
        grafana: FakeGrafana, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    dashboards = _dashboards(tmp_path)
    args = ("--influx-user", "grafana", "--influx-password-env", "PW_INFLUX_PASSWORD")
    assert _push(grafana.url, dashboards, *args) == push.EXIT_OK
    assert _push(grafana.url, dashboards, *args) == push.EXIT_OK

    out, _ = _assert_no_secret_leaked(capsys, caplog)
    # Grafana never returns secrets, so a datasource with one is written again: as a PUT to
    # the same uid, never a second POST.
    assert "datasource ParkWatch InfluxDB (parkwatch-influxdb): updated" in out
    ds_writes = [(w.method, w.path) for w in grafana.writes() if "datasources" in w.path]
    assert ds_writes == [("POST", "/api/datasources"),
                         ("PUT", "/api/datasources/uid/parkwatch-influxdb")]
    (ds,) = grafana.state.datasources.values()
    assert ds["user"] == "grafana"
    assert ds["secureJsonData"] == {"password": INFLUX_PASSWORD}
    assert "httpHeaderName1" not in ds["jsonData"]


def test_token_from_a_file(grafana: FakeGrafana, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN")
    token_file = tmp_path / "grafana.token"
    token_file.write_text(TOKEN + "\n")
    assert _push(grafana.url, _dashboards(tmp_path), "--token-file",
                 str(token_file)) == push.EXIT_OK
    _assert_no_secret_leaked(capsys, caplog)


def test_rejected_token_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    with FakeGrafana(token="glsa_the_right_one") as grafana:
        rc = _push(grafana.url, _dashboards(tmp_path))
    _, err = _assert_no_secret_leaked(capsys, caplog)
    assert rc == push.EXIT_AUTH
    assert "rejected the token (401 Unauthorized)" in err
    assert grafana.writes() == []


def test_token_without_permission_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    with FakeGrafana(token=TOKEN, role="Viewer") as grafana:
        rc = _push(grafana.url, _dashboards(tmp_path))
    _, err = _assert_no_secret_leaked(capsys, caplog)
    assert rc == push.EXIT_AUTH
    assert "accepted the token but refused creating the datasource (403 Forbidden)" in err


def test_unreachable_grafana(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             caplog: pytest.LogCaptureFixture) -> None:
    rc = _push(f"http://127.0.0.1:{free_port()}", _dashboards(tmp_path))
    _, err = _assert_no_secret_leaked(capsys, caplog)
    assert rc == push.EXIT_UNREACHABLE
    assert "is unreachable" in err


def test_missing_token_and_bad_arguments(
        grafana: FakeGrafana, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    dashboards = _dashboards(tmp_path)
    monkeypatch.delenv("GRAFANA_TOKEN")
    assert _push(grafana.url, dashboards) == push.EXIT_USAGE
    assert "no Grafana token: set the environment variable GRAFANA_TOKEN" in capsys.readouterr().err

    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert _push("http://admin:admin@127.0.0.1:3000", dashboards) == push.EXIT_USAGE
    assert "must not carry credentials" in capsys.readouterr().err
    assert _push(grafana.url, tmp_path / "nowhere") == push.EXIT_USAGE
    assert "not a folder" in capsys.readouterr().err
    assert _push(grafana.url, dashboards, "--influx-token-env", "PW_UNSET") == push.EXIT_USAGE
    assert "no InfluxDB token" in capsys.readouterr().err
    assert grafana.writes() == []


def test_provisioned_objects_are_left_alone(
        grafana: FakeGrafana, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dashboards = _dashboards(tmp_path)
    assert _push(grafana.url, dashboards) == push.EXIT_OK
    grafana.state.datasources[push.DATASOURCE_UID]["readOnly"] = True
    grafana.state.dashboards["pw-overview"]["meta"]["provisioned"] = True
    _dashboards(tmp_path, {"overview": "Edited", "health": "Edited too"})
    capsys.readouterr()

    assert _push(grafana.url, dashboards) == push.EXIT_OK
    out = capsys.readouterr().out
    assert "datasource ParkWatch InfluxDB (parkwatch-influxdb): left alone (provisioned)" in out
    assert "dashboard  Edited (pw-overview): left alone (provisioned)" in out
    assert "dashboard  Edited too (pw-health): updated" in out


def test_generated_dashboards_are_pushed_by_default(
        grafana: FakeGrafana, capsys: pytest.CaptureFixture[str]) -> None:
    expected = build_all()
    rc = main(["grafana", "push", "--url", grafana.url])
    assert rc == push.EXIT_OK, capsys.readouterr().err
    assert len(grafana.state.dashboards) == len(expected)
    for saved in grafana.state.dashboards.values():
        assert saved["meta"]["folderUid"] == push.FOLDER_UID
