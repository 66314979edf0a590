"""``parkwatch scorecard`` end to end: the known day's alarm store file, device_status points
in a real InfluxDB (as the gateway-owned liveness writes them), the command's JSON, its daily
``scorecard`` points, and the printable page rendered by a real headless Chromium."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.tools.cli import main
from gateway.tools.devservices import Influxd
from tests.support.gateway import write_config
from tests.support.influx import influx_rows
from tests.support.scorecard import (
    T0,
    registry,
    registry_yaml,
    store_history,
    tenants_yaml,
    write_status,
)

pytestmark = pytest.mark.integration

@pytest.fixture
def config(tmp_path: Path, influxd: Influxd) -> tuple[Path, str]:
    path, _, db = write_config(tmp_path, "mqtt://127.0.0.1:1", influxd.url,
                               registry=str(registry_yaml(tmp_path / "registry.yaml")),
                               tenants=str(tenants_yaml(tmp_path / "tenants.yaml")))
    asyncio.run(store_history(tmp_path / "state" / "alarms.sqlite3", registry()))
    write_status(influxd, db)
    return path, db


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["scorecard", "--park", "p1", "--from", "2026-11-01", "--to", "2026-11-02",
                 *args]) == 0
    return capsys.readouterr().out


def test_json_per_park_and_tenant_with_liveness(config: tuple[Path, str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(run(capsys, "--config", str(config[0]), "--format", "json"))
    # 24 + 12 + 0 + 12 + 19 = 67 of 5 x 24 device-hours; wp-1 isolated 21-24 h (3 h, online).
    assert doc["online"] == {"rate": round(67 / 120, 6), "rate_outside_maintenance":
                             round(64 / 117, 6), "devices": 5, "never_seen": 1,
                             "registered_device_minutes": 7200.0,
                             "online_device_minutes": 4020.0,
                             "maintenance_device_minutes": 180.0}
    # The scorecard is made weeks later: all five answered-or-not fire alarms are due.
    assert doc["fire_false_alarms"]["rate"] == 0.75
    assert (doc["fire_false_alarms"]["due_24h"], doc["fire_false_alarms"]["undisposed_share"]) \
        == (5, 0.2)
    assert (doc["response"]["p50_s"], doc["response"]["p90_s"]) == (60.0, 240.0)
    # Liveness counts offline time as impaired: fd-2 12 h, mc-1 24 h, wp-1 12 h, wl-1 5 h.
    assert doc["intactness"]["impaired_device_hours"] == 53.0
    assert doc["intactness"]["rate"] == round(67 / 120, 6)
    assert [(t["tenant"], t["online"]["rate"]) for t in doc["tenants"]] == [
        ("ta", 0.5), ("tb", round(31 / 48, 6))]
    tenant = json.loads(run(capsys, "--config", str(config[0]), "--format", "json",
                            "--tenant", "tb"))
    assert tenant["online"]["rate"] == round(31 / 48, 6)       # fd-2 12 h + wl-1 19 h
    assert tenant["fire_false_alarms"]["rate"] == 0.0
    # Who the tenant is, from the tenant register.
    assert tenant["tenant_info"]["name"] == "青松化工股份有限公司"
    assert tenant["tenant_info"]["fire_safety_manager"] == {"name": "陈静",
                                                            "phone": "13900000004"}
    assert [t["tenant_info"]["name"] for t in doc["tenants"]] == ["华山电子有限公司",
                                                                 "青松化工股份有限公司"]
    assert doc["tenant_info"] is None        # the park's own scorecard


def test_write_stores_one_daily_point_per_park_and_tenant(
        config: tuple[Path, str], influxd: Influxd, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "--config", str(config[0]), "--format", "csv", "--write")
    rows = influx_rows(influxd, config[1], 'SELECT "online_rate", "fire_false", "fire_judged",'
                       ' "impaired_h" FROM "scorecard" GROUP BY "scope", "tenant"')
    assert sorted(rows) == sorted([[T0, 67 / 120, 3.0, 4.0, 53.0],
                                   [T0, 36 / 72, 3.0, 3.0, 36.0],      # ta: fd-1, mc-1, wp-1
                                   [T0, 31 / 48, 0.0, 1.0, 17.0]])     # tb: fd-2, wl-1


def test_the_printable_page_shows_the_numbers_in_a_real_browser(
        config: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: run scripts/bootstrap.sh (Debian package "
                    "'chromium'), which the HTML scorecard test needs")
    page = tmp_path / "scorecard.html"
    page.write_text(run(capsys, "--config", str(config[0]), "--format", "html"),
                    encoding="utf-8")
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", f"--user-data-dir={tmp_path / 'chromium'}",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=True).stdout

    def cell(figure: str) -> str:
        m = re.search(rf'data-figure="{re.escape(figure)}">([^<]*)<', dom)
        assert m is not None, f"{figure!r} not on the rendered page"
        return m.group(1)

    assert "园区消防安全评分卡" in dom
    assert cell("Device online rate") == "55.83%"
    assert cell("Fire false-alarm rate") == "75.00%"
    assert cell("Time to acknowledge P50") == "60 s"
    assert cell("Time to acknowledge P90") == "240 s"
    assert cell("Acknowledged within 3 min") == "60.00%"
    assert cell("Equipment intactness") == "55.83%"
    assert cell("Water pressure compliance") == "97.92%"
    assert cell("Mean time to repair a fault") == "7200 s"
    # The per-tenant table, with company names and fire safety managers (tenant register).
    assert "<td>ta</td><td>华山电子有限公司</td><td>李娜 13800000002</td>" in dom
    assert "<td>tb</td><td>青松化工股份有限公司</td><td>陈静 13900000004</td>" in dom
    # One page, as printed (A4): the page a park hands in.
    pdf = tmp_path / "scorecard.pdf"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", f"--user-data-dir={tmp_path / 'chr2'}",
                    "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()],
                   capture_output=True, timeout=90, check=True)
    assert len(re.findall(rb"/Type\s*/Page\b", pdf.read_bytes())) == 1


def test_table_and_usage_errors(config: tuple[Path, str],
                                capsys: pytest.CaptureFixture[str]) -> None:
    table = run(capsys, "--config", str(config[0]))
    assert "75.00%  火警误报率 / Fire false-alarm rate" in table
    assert "Noisiest devices: fd-1 (3), fd-2 (3), wl-1 (2), wp-1 (2), mc-1 (1)" in table
    # A tenant's table and page name the company and its 消防安全管理人 (tenant register).
    tenant = run(capsys, "--config", str(config[0]), "--tenant", "ta")
    assert tenant.startswith("p1 / ta 华山电子有限公司  2026-11-01 00:00")
    assert "消防安全管理人 / Fire safety manager: 李娜 13800000002\n" in tenant
    page = run(capsys, "--config", str(config[0]), "--tenant", "ta", "--format", "html")
    assert "<b data-tenant-name>华山电子有限公司</b>" in page
    assert "消防安全责任人 / Responsible: 王强 13800000001" in page
    assert main(["scorecard", "--config", str(config[0]), "--park", "nope",
                 "--period", "2026-11"]) == 2
    assert "no device of park 'nope'" in capsys.readouterr().err
    assert main(["scorecard", "--config", str(config[0]), "--park", "p1",
                 "--period", "2099-01"]) == 2
