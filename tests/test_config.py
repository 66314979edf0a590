"""Configuration: the example loads, env overrides win, every error names file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.tools.cli import main
from sensors.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "parkwatch.example.yaml"


def test_example_config_loads_and_check_config_passes(capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    settings = load_settings(EXAMPLE)
    assert settings.instance == "demo"
    assert settings.mqtt.receive_maximum == 1000
    assert main(["check-config", "--config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK:")


def test_env_overrides_file_with_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARKWATCH_MQTT__URL", "mqtts://alice:s3cr%40t@broker.park:8883")
    monkeypatch.setenv("PARKWATCH_INFLUX__TOKEN", "tok-123")
    monkeypatch.setenv("PARKWATCH_INFLUX__BUCKET", "pw")
    monkeypatch.setenv("PARKWATCH_REGISTRY", "/srv/registry.csv")
    monkeypatch.setenv("PARKWATCH_NOTIFY__WEBHOOK_URL", "http://127.0.0.1:9/hook")
    settings = load_settings(EXAMPLE)
    assert settings.mqtt.url == "mqtts://broker.park:8883"
    assert settings.mqtt.username == "alice"
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == "s3cr@t"
    assert settings.mqtt.tls_enabled
    assert settings.mqtt.port == 8883
    assert settings.influx.bucket == "pw"
    assert str(settings.registry) == "/srv/registry.csv"
    assert settings.notify.webhook_url == "http://127.0.0.1:9/hook"
    # Secrets never appear in repr or str.
    text = repr(settings) + str(settings)
    assert "s3cr" not in text
    assert "tok-123" not in text


def test_every_error_reported_with_file_line_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "instance: demo\n"
        "mqtt:\n"
        "  url: http://nope\n"           # line 3: wrong scheme
        "  keepalive_s: 2\n"             # line 4: below minimum
        "influx:\n"
        "  batch_line: 10\n"             # line 6: typo -> unknown key
        "parks:\n"
        "  xz01:\n"
        "    timezone: Mars/Olympus\n"   # line 9
    )
    with pytest.raises(ConfigError) as info:
        load_settings(bad)
    problems = "\n".join(info.value.problems)
    assert f"{bad}:3: mqtt" in problems
    assert f"{bad}:6: influx.batch_line: unknown key" in problems
    assert f"{bad}:9: parks.xz01.timezone" in problems
    # mqtt.url fails in a model-level validator, so keepalive is reported on the next run;
    # everything else is reported together.
    assert len(info.value.problems) >= 3


def test_env_error_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("instance: demo\n")
    monkeypatch.setenv("PARKWATCH_INGEST__QUEUE_SIZE", "1")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert "environment variable PARKWATCH_INGEST__QUEUE_SIZE" in info.value.problems[0]


def test_check_config_exits_nonzero_and_lists_config_and_registry_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = tmp_path / "reg.yaml"
    reg.write_text("devices:\n  - {device: a-1, park: p, building: b, floor: '1', zone: z, "
                   "kind: smok}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"registry: {reg}\nhttp:\n  port: 99999\n")
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:3: http.port" in err


def test_missing_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(listy)


def test_influx_v2_requires_org_bucket_token(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("influx:\n  version: '2'\n  org: park\n  token: tok-secret\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert "version 2 needs bucket" in info.value.problems[0]
    assert info.value.problems[0].startswith(f"{cfg}:1: influx")
    assert "tok-secret" not in str(info.value)


def test_url_credentials_and_own_topic_root_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("influx:\n  url: http://admin:hunter2@db:8086\nmqtt:\n"
                   "  topic_root: parkwatch/devices\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    text = "\n".join(info.value.problems)
    assert f"{cfg}:2: influx.url: put credentials in influx.username" in text
    assert f"{cfg}:4: mqtt.topic_root: topics under 'parkwatch/'" in text
    assert "hunter2" not in text


def test_credentials_in_the_mqtt_url_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mqtt:\n  username: from-file\n")
    monkeypatch.setenv("PARKWATCH_MQTT__URL", "mqtts://from-env:pw@broker")
    settings = load_settings(cfg)
    assert settings.mqtt.username == "from-env"


def test_shutdown_timeout_is_read_from_the_file_and_must_be_positive(tmp_path: Path) -> None:
    # The SIGTERM test in test_shutdown.py relies on the file's value reaching the gateway.
    cfg = tmp_path / "c.yaml"
    cfg.write_text("shutdown_timeout_s: 3\n")
    assert load_settings(cfg).shutdown_timeout_s == 3.0
    # Zero would make every shutdown give up at once and leave all in-flight work to the broker.
    cfg.write_text("instance: demo\nshutdown_timeout_s: 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert info.value.problems[0].startswith(f"{cfg}:2: shutdown_timeout_s")
