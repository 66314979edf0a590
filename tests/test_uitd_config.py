"""The ``uitd:`` settings and ``check-config`` on the point map."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import Settings, UitdSettings, load_settings
from gateway.tools.cli import main
from sensors.errors import ConfigError
from tests.support.paths import ROOT, SAMPLE_REGISTRY


def test_listen_forms_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().uitd.listen is None
    assert UitdSettings(listen="9000").listen == "127.0.0.1:9000"
    monkeypatch.setenv("PARKWATCH_UITD__LISTEN", "0.0.0.0:9001")
    assert Settings().uitd.listen == "0.0.0.0:9001"


@pytest.mark.parametrize("bad", [{"listen": "host:port"}, {"listen": "1.2.3.4:70000"},
                                 {"centre_address": "12345"}, {"heartbeat_allowance_s": 0},
                                 {"max_connections": 0}, {"allow_from": ["not-an-ip"]}])
def test_bad_uitd_settings_are_refused(tmp_path: Path, bad: dict[str, object]) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"uitd": bad}))
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert f"{cfg}:2: uitd." in exc.value.problems[0]


def test_check_config_reports_point_map_errors_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = (ROOT / "config" / "sample-park" / "points.csv").read_text().splitlines()
    rows[3] = rows[3].replace("fp-0001", "fp-9999", 1)
    points = tmp_path / "points.csv"
    points.write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"registry: {SAMPLE_REGISTRY}\nuitd:\n  points: {points}\n")
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{points}:4: point" in err
    assert "fp-9999" in err
    good = tmp_path / "good.yaml"
    good.write_text(f"registry: {SAMPLE_REGISTRY}\nuitd:\n  points: "
                    f"{ROOT / 'config' / 'sample-park' / 'points.csv'}\n")
    assert main(["check-config", "--config", str(good)]) == 0
    assert "panel points" in capsys.readouterr().out
