"""No secret ever appears in a log line, an error message or a printed setting (issue 6, item 5).

Every secret setting gets a distinctive value. The gateway then runs for real, in-process and as
a ``parkwatch`` subprocess: traffic, a rejected payload, a fire alarm notified through the
catch-all webhook and through a robot channel that cannot be reached, a refused broker login,
a refused API call, ``check-config`` and config errors. Everything logged or printed, at DEBUG,
in both log formats, is searched for every secret.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.config import Settings, load_settings
from gateway.http.app import start_http
from gateway.ingest.mqtt import MqttSession
from gateway.logs import setup_logging
from gateway.metrics import Metrics
from gateway.tools.cli import main
from gateway.tools.devservices import Influxd, Mosquitto
from gateway.tools.simulator.publisher import MqttPublisher
from sensors.errors import ConfigError
from sensors.registry import Registry
from tests.support.gateway import make_settings, running_gateway
from tests.support.ids import unique
from tests.support.notify_servers import ProviderServer, closed_port_url
from tests.support.paths import ROOT, SAMPLE_REGISTRY
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

MQTT_USER = "parkwatch"
MQTT_PASSWORD = "MQTTPW-9f3a1c-secret"
WRONG_MQTT_PASSWORD = "WRONGPW-4d2e77-secret"
INFLUX_PASSWORD = "INFLUXPW-71bb0e-secret"
INFLUX_TOKEN = "INFLUXTOKEN-c0ffee-secret"
WEBHOOK_SECRET = "whsec_V0VCSE9PSy1TRUNSRVQtOGE3Yi0wMDAx"   # base64 of a distinctive key
ACK_SECRET = "ACKSECRET-5e6f7a-0123456789"
HTTP_TOKEN = "HTTPTOKEN-a1b2c3-0123456789"
DING_ACCESS_TOKEN = "DINGTOKEN-8c9d0e-secret"
DING_SIGNING = "SECDING-2f3e4d-secret"
URL_PASSWORD = "URLPASS-6a5b4c-secret"
SHORT_ACK = "SHORTACK-1"                                      # too short: a config error

SECRETS = [MQTT_PASSWORD, WRONG_MQTT_PASSWORD, INFLUX_PASSWORD, INFLUX_TOKEN, WEBHOOK_SECRET,
           WEBHOOK_SECRET.removeprefix("whsec_"), ACK_SECRET, HTTP_TOKEN, DING_ACCESS_TOKEN,
           DING_SIGNING, URL_PASSWORD, SHORT_ACK]

ROUTING = """\
notify:
  channels:
    ops_robot:
      type: dingtalk
      secret_env:
        url: PW_TEST_DING_URL
        signing: PW_TEST_DING_SECRET
  contacts:
    ops:
      channels: [ops_robot]
  duty_officer: ops
  route:
    receivers: [duty_officer]
"""


def assert_clean(text: str, where: str) -> None:
    found = [s for s in SECRETS if s in text]
    assert not found, f"secret(s) {found} in {where}:\n{text[-3000:]}"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A broker that wants a password: the right one works, the wrong one is refused."""
    d = tmp_path_factory.mktemp("pw-mosquitto")
    passwd = d / "passwd"
    passwd.touch(mode=0o600)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), MQTT_USER, MQTT_PASSWORD],
                   check=True, capture_output=True)
    service = Mosquitto(d, extra_conf=f"allow_anonymous false\npassword_file {passwd}\n")
    service.start()
    yield service
    service.stop()


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Everything logged at DEBUG, through ParkWatch's own formatters (logfmt and JSON)."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    formatters = []
    for fmt in ("logfmt", "json"):
        setup_logging("DEBUG", fmt)
        formatters.append(root.handlers[0].formatter)
    buffer = io.StringIO()
    root.handlers[:] = saved
    for formatter in formatters:
        handler = logging.StreamHandler(buffer)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    yield buffer
    root.handlers[:] = saved
    root.setLevel(level)


def _routing_file(tmp_path: Path) -> Path:
    path = tmp_path / "notify.yaml"
    path.write_text(ROUTING)
    return path


def _secret_env(tmp_path: Path) -> dict[str, str]:
    """The channel secrets, as the routing file reads them (robot URL carries its token)."""
    return {"PW_TEST_DING_URL": f"{closed_port_url()}/robot/send?access_token={DING_ACCESS_TOKEN}",
            "PW_TEST_DING_SECRET": DING_SIGNING}


def test_settings_never_show_a_secret(tmp_path: Path) -> None:
    settings = Settings.model_validate({
        "mqtt": {"url": f"mqtts://{MQTT_USER}:{MQTT_PASSWORD}@broker.example:8883"},
        "influx": {"url": "http://127.0.0.1:8086", "username": "w", "password": INFLUX_PASSWORD,
                   "token": INFLUX_TOKEN},
        "http": {"host": "0.0.0.0", "token": HTTP_TOKEN},
        "notify": {"webhook_url": "https://ops.example/hook", "webhook_secret": WEBHOOK_SECRET,
                   "ack_secret": ACK_SECRET}})
    assert settings.mqtt.password is not None
    assert settings.mqtt.password.get_secret_value() == MQTT_PASSWORD    # moved, not lost
    for text, where in [(repr(settings), "repr"), (str(settings), "str"),
                        (settings.model_dump_json(), "model_dump_json"),
                        (str(settings.model_dump()), "model_dump"),
                        (repr(settings.mqtt), "repr(mqtt)"), (settings.mqtt.url, "mqtt.url"),
                        (json.dumps(settings.model_dump(mode="json")), "model_dump(json)")]:
        assert_clean(text, where)


@pytest.mark.parametrize(("yaml_text", "env"), [
    # Each is refused; the error must name the key without repeating the secret.
    (f"influx:\n  url: http://admin:{URL_PASSWORD}@127.0.0.1:8086\n", {}),
    (f"mqtt:\n  url: mqtt://gw:{URL_PASSWORD}@broker:notaport\n", {}),
    (f"notify:\n  ack_secret: {SHORT_ACK}\n", {}),
    (f"http:\n  host: 0.0.0.0\n  token: {SHORT_ACK}\n", {}),
    ("influx:\n  version: '2'\n", {"PARKWATCH_INFLUX__TOKEN": INFLUX_TOKEN,
                                  "PARKWATCH_MQTT__PASSWORD": MQTT_PASSWORD}),
    ("mqtt:\n  password: [not, a, string]\n", {"PARKWATCH_NOTIFY__ACK_SECRET": SHORT_ACK}),
])
def test_config_errors_do_not_echo_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], yaml_text: str,
                                           env: dict[str, str]) -> None:
    cfg = tmp_path / "pw.yaml"
    cfg.write_text(f"registry: {SAMPLE_REGISTRY}\n{yaml_text}")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg)
    assert_clean(str(err.value), "ConfigError")
    assert main(["check-config", "--config", str(cfg)]) == 2
    out = capsys.readouterr()
    assert_clean(out.out + out.err, "check-config output")


async def test_a_running_gateway_logs_no_secret(
        tmp_path: Path, broker: Mosquitto, influxd: Influxd, sample_registry: Registry,
        monkeypatch: pytest.MonkeyPatch, captured_logs: io.StringIO) -> None:
    for key, value in _secret_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    async with ProviderServer(webhook_secret=WEBHOOK_SECRET) as hook:
        settings = make_settings(
            tmp_path, mqtt_url=f"mqtt://{MQTT_USER}:{MQTT_PASSWORD}@127.0.0.1:{broker.port}",
            influx_url=influxd.url,
            influx={"username": "writer", "password": INFLUX_PASSWORD},
            http={"enabled": True, "token": HTTP_TOKEN},
            notify={"webhook_url": f"{hook.url}/parkwatch", "webhook_secret": WEBHOOK_SECRET,
                    "ack_secret": ACK_SECRET, "config": str(_routing_file(tmp_path))},
            observe={"log_level": "DEBUG", "gateway_interval_s": 0.2})
        root = settings.mqtt.topic_root
        panel = next(d for d in sample_registry if d.kind == "fire_panel")
        gauge = next(d for d in sample_registry if d.kind == "water_pressure")
        async with running_gateway(settings, sample_registry) as gw:
            runner = await start_http(gw, "127.0.0.1", 0)
            try:
                port = runner.addresses[0][1]
                await _drive(gw, broker, root, panel.device, gauge.device, hook, port,
                             sample_registry)
            finally:
                await runner.cleanup()
    # A second session with the wrong password: refused, retried, never echoed.
    wrong = make_settings(tmp_path, mqtt_url=f"mqtt://{MQTT_USER}:{WRONG_MQTT_PASSWORD}"
                                             f"@127.0.0.1:{broker.port}",
                          influx_url=influxd.url).mqtt
    metrics = Metrics()
    async with MqttSession(settings=wrong, client_id=unique("wrong"), subscriptions=[],
                           metrics=metrics):
        await wait_for(lambda: "refused the connection" in captured_logs.getvalue(),
                       timeout_s=30, what="the refused login logged")
    text = captured_logs.getvalue()
    assert "Not authorized" in text
    assert "ops_robot: POST" in text      # the robot's failing URL is logged, token masked
    assert_clean(text, "the gateway's log")


async def _drive(gw: Any, broker: Mosquitto, root: str, panel: str, gauge: str,
                 hook: ProviderServer, http_port: int, registry: Registry) -> None:
    p = registry.get(panel)
    g = registry.get(gauge)
    assert p is not None
    assert g is not None
    async with MqttPublisher("127.0.0.1", broker.port, client_id=unique("pub"),
                             username=MQTT_USER, password=MQTT_PASSWORD) as pub:
        await pub.publish(f"{root}/{g.park}/{g.building}/{g.device}/telemetry", json.dumps(
            {"ts": int(time.time()), "values": {"pressure_mpa": 0.3}}).encode())
        await pub.publish(f"{root}/{g.park}/{g.building}/{g.device}/telemetry", b"\xff garbage")
        await pub.publish(f"{root}/{p.park}/{p.building}/{p.device}/event", json.dumps(
            {"ts": time.time(), "type": "fire_alarm", "point": "1-01-001"}).encode())
        await pub.flush(10)
    await wait_for(lambda: len(hook.of("webhook")) >= 1, timeout_s=30,
                   what="the catch-all webhook delivered")
    await wait_for(lambda: gw.metrics.value("parkwatch_points_written_total") >= 1,
                   timeout_s=30, what="a point written to InfluxDB")
    base = f"http://127.0.0.1:{http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/alarms",
                            headers={"Authorization": f"Bearer {HTTP_TOKEN}x"}) as resp:
            assert resp.status == 401
        async with http.get(f"{base}/alarms",
                            headers={"Authorization": f"Bearer {HTTP_TOKEN}"}) as resp:
            alarms = await resp.json()
            assert any(a["rule"] == "fire_alarm" for a in alarms)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PARKWATCH_")}
    env.update(_secret_env(tmp_path))
    env.update({
        "PARKWATCH_REGISTRY": str(SAMPLE_REGISTRY),
        "PARKWATCH_RULES": str(ROOT / "config" / "rules"),
        "PARKWATCH_STATE_DIR": str(tmp_path / "state"),
        "PARKWATCH_MQTT__PASSWORD": WRONG_MQTT_PASSWORD,
        "PARKWATCH_MQTT__USERNAME": MQTT_USER,
        "PARKWATCH_MQTT__RECONNECT_MAX_S": "1",
        "PARKWATCH_INFLUX__USERNAME": "writer",
        "PARKWATCH_INFLUX__PASSWORD": INFLUX_PASSWORD,
        "PARKWATCH_INFLUX__VERSION": "1",
        "PARKWATCH_HTTP__TOKEN": HTTP_TOKEN,
        "PARKWATCH_HTTP__PORT": "0",
        "PARKWATCH_NOTIFY__WEBHOOK_URL": "https://ops.example/hook",
        "PARKWATCH_NOTIFY__WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PARKWATCH_NOTIFY__ACK_SECRET": ACK_SECRET,
        "PARKWATCH_NOTIFY__CONFIG": str(_routing_file(tmp_path)),
        "PARKWATCH_OBSERVE__LOG_LEVEL": "DEBUG",
    })
    env.update(extra)
    return env


def _parkwatch(*args: str) -> list[str]:
    return [sys.executable, "-m", "gateway.tools.cli", *args]


@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_parkwatch_run_and_check_config_print_no_secret(
        tmp_path: Path, broker: Mosquitto, influxd: Influxd, log_format: str) -> None:
    env = _env(tmp_path, PARKWATCH_MQTT__URL=f"mqtt://127.0.0.1:{broker.port}",
               PARKWATCH_INFLUX__URL=influxd.url, PARKWATCH_OBSERVE__LOG_FORMAT=log_format,
               PARKWATCH_INSTANCE=unique("sec"))
    check = subprocess.run(_parkwatch("check-config"), env=env, capture_output=True, text=True,
                           timeout=60, cwd=ROOT)
    assert check.returncode == 0, check.stderr
    assert_clean(check.stdout + check.stderr, "check-config")

    bad = subprocess.run(_parkwatch("run"), env={**env, "PARKWATCH_NOTIFY__ACK_SECRET": SHORT_ACK,
                                                 "PARKWATCH_HTTP__HOST": "0.0.0.0"},
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2
    assert "notify.ack_secret" in bad.stderr
    assert_clean(bad.stdout + bad.stderr, "a config error from parkwatch run")

    log = tmp_path / f"run-{log_format}.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(_parkwatch("run"), env=env, stdout=sink,
                                stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while log.read_text().count("refused the connection") < 2:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    text = log.read_text()
    assert "Not authorized" in text
    assert_clean(text, f"parkwatch run ({log_format})")


def test_the_scan_would_see_a_leak(captured_logs: io.StringIO) -> None:
    """Guard against a vacuous pass: a secret that is logged is found."""
    logging.getLogger("gateway.test").info("oops %s", MQTT_PASSWORD)
    with pytest.raises(AssertionError, match="secret"):
        assert_clean(captured_logs.getvalue(), "a deliberate leak")
