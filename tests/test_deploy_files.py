"""The production deploy files (deploy/) are consistent, accepted by the real programs that read
them, and do what they claim.

Docker cannot run here, so the compose stack itself is not started. Instead: every YAML parses;
every host path compose mounts exists (or is made by scripts/first-install); provisioning matches
the mounts and ``parkwatch grafana push``; the ParkWatch example configs pass the real
``check-config``; a real mosquitto runs the broker config exactly as compose mounts it (paths
re-rooted into a temp folder, port changed) and enforces passwords, TLS and the per-device ACL;
the compose health check command works against it; the systemd unit passes systemd-analyze.
"""

from __future__ import annotations

import configparser
import os
import pwd
import queue
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from gateway.grafana import push
from gateway.tools.cli import main
from gateway.tools.devservices import free_port, require_binary

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
# Host files compose mounts that are made per install, never committed.
MADE_BY_FIRST_INSTALL = {"mosquitto/passwd", "mosquitto/certs/ca.crt",
                         "mosquitto/certs/server.crt", "mosquitto/certs/server.key"}
SAMPLE_REGISTRY = ROOT / "config" / "sample-park" / "registry.yaml"


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def _service(name: str) -> dict[str, Any]:
    service = _compose()["services"][name]
    assert isinstance(service, dict)
    return service


def _mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, source, target) of every volume entry, short or long syntax."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
            kind = "bind" if source.startswith((".", "/")) else "volume"
        else:
            kind, source, target = entry["type"], entry["source"], entry["target"]
        out.append((kind, source, target))
    return out


def _bind_sources(service: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(Path(s)), t) for kind, s, t in _mounts(service) if kind == "bind"]


# --- files parse and reference what exists -------------------------------------------------------

def test_every_yaml_under_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert COMPOSE in files
    for path in files:
        assert yaml.safe_load(path.read_text()) is not None, path


def test_compose_references_files_that_exist() -> None:
    compose = _compose()
    declared_volumes = set(compose["volumes"])
    for name, service in compose["services"].items():
        assert "healthcheck" in service, f"{name} has no health check"
        assert service.get("restart") == "unless-stopped", name
        for kind, source, _target in _mounts(service):
            if kind == "volume":
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
                continue
            rel = str(Path(source))
            if rel in MADE_BY_FIRST_INSTALL:
                continue  # test_first_install_makes_what_compose_mounts
            assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
        for env_file in service.get("env_file", []):
            path = env_file if isinstance(env_file, str) else env_file["path"]
            assert (DEPLOY / path).is_file(), f"{name}: env_file {path} missing"
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert context.is_dir()
            assert (context / service["build"]["dockerfile"]).is_file()


def test_every_compose_variable_is_in_env_example() -> None:
    example = _env_file(DEPLOY / ".env.example")
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert used, "compose takes its settings from deploy/.env"
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    # The example holds no secret: each one is a CHANGE_ME placeholder or empty.
    for key, value in example.items():
        if re.search(r"PASSWORD|TOKEN|SECRET", key):
            assert value in ("CHANGE_ME", ""), key


def test_secrets_made_per_install_are_git_ignored() -> None:
    paths = [".env", "mosquitto/passwd", "mosquitto/certs/ca.key", "mosquitto/certs/server.key"]
    result = subprocess.run(["git", "check-ignore", *[f"deploy/{p}" for p in paths]],
                            cwd=ROOT, capture_output=True, text=True, check=False)
    assert sorted(result.stdout.split()) == sorted(f"deploy/{p}" for p in paths)


def test_dockerfile_builds_from_the_lock_as_a_non_root_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev" in text
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    (uv_version,) = re.findall(r"^UV_VERSION=(\S+)", bootstrap, re.M)
    assert f"ARG UV_VERSION={uv_version}" in text, "the image must use the same uv as bootstrap"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users
    assert users[-1] not in ("root", "0")
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text()
    assert "uv.lock" in ignore


def test_influxdb_init_script_maps_the_bucket_to_database_parkwatch() -> None:
    (_, source, _target), *_ = [m for m in _mounts(_service("influxdb"))
                               if m[2] == "/docker-entrypoint-initdb.d"]
    scripts = sorted((DEPLOY / source).glob("*.sh"))
    assert scripts
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        text = script.read_text()
        assert "influx v1 dbrp create" in text
        assert "--rp autogen" in text
        assert 'db="${PARKWATCH_INFLUXQL_DATABASE:-parkwatch}"' in text
    env = _service("influxdb")["environment"]
    assert env["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert {"DOCKER_INFLUXDB_INIT_ORG", "DOCKER_INFLUXDB_INIT_BUCKET",
            "DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"} <= set(env)


# --- Grafana provisioning --------------------------------------------------------------------

def test_datasource_provisioning_matches_what_push_creates() -> None:
    doc = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/parkwatch.yaml").read_text())
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    body = push.Datasource(url="http://influxdb:8086", database="parkwatch",
                           influx_token="x").body()
    assert ds["uid"] == body["uid"] == "parkwatch-influxdb"
    assert ds["name"] == body["name"]
    assert ds["type"] == "influxdb"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["dbName"] == "parkwatch"
    assert ds["jsonData"]["httpHeaderName1"] == "Authorization"
    header = re.fullmatch(r"Token \$\{(\w+)\}", ds["secureJsonData"]["httpHeaderValue1"])
    assert header is not None
    (var,) = header.groups()
    assert var in _service("grafana")["environment"]
    assert ds["url"] == "http://influxdb:8086"  # the compose service name and port


def test_dashboard_provider_reads_the_mounted_dashboards() -> None:
    doc = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/parkwatch.yaml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["folderUid"] == push.FOLDER_UID
    mounts = dict(_bind_sources(_service("grafana")))
    # The demo stack shows the Chinese dashboards (issue 14).
    assert mounts["grafana/dashboards-zh-CN"] == provider["options"]["path"]
    assert mounts["grafana/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    assert mounts["grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"


# --- ParkWatch configs pass the real loader ------------------------------------------------------

def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _check_config(config: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture[str]) -> str:
    for key in list(os.environ):
        if key.upper().startswith("PARKWATCH_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    rc = main(["check-config", "--config", str(config)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


def test_compose_parkwatch_config_passes_check_config(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The environment compose gives the container, with dummy secrets from the .env example.
    example = _env_file(DEPLOY / ".env.example")
    env = {}
    for key, value in _service("parkwatch")["environment"].items():
        (var,) = re.findall(r"\$\{(\w+)", value)
        env[key] = "dummy-secret-value" if example[var] == "CHANGE_ME" else example[var]
    # The registry is the park's own file; the sample park stands in for it.
    env["PARKWATCH_REGISTRY"] = str(SAMPLE_REGISTRY)
    out = _check_config(DEPLOY / "parkwatch/config.yaml", env, monkeypatch, capsys)
    assert "broker mqtts://mosquitto:8883" in out
    assert "InfluxDB http://influxdb:8086" in out
    assert "dummy-secret-value" not in out


def test_systemd_env_example_passes_check_config(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env = _env_file(DEPLOY / "systemd/parkwatch.env.example")
    env["PARKWATCH_REGISTRY"] = str(SAMPLE_REGISTRY)
    out = _check_config(ROOT / "config/parkwatch.example.yaml", env, monkeypatch, capsys)
    assert "broker mqtts://mqtt.park.example:8883" in out


# --- scripts and the real broker -------------------------------------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/ after scripts/first-install, as an IT person would have it."""
    copy = tmp_path_factory.mktemp("install") / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns(".env", "passwd", "*.key",
                                                                "*.crt"))
    require_binary("mosquitto_passwd", "mosquitto")
    subprocess.run([str(copy / "scripts/first-install"), "mqtt.park.example", "10.20.0.5"],
                   check=True, capture_output=True)
    return copy


def test_first_install_makes_what_compose_mounts(installed: Path) -> None:
    for rel in MADE_BY_FIRST_INSTALL:
        assert (installed / rel).is_file(), rel
    env = _env_file(installed / ".env")
    assert "CHANGE_ME" not in env.values()
    assert env["PARKWATCH_INFLUX_TOKEN"] == env["INFLUXDB_ADMIN_TOKEN"]
    assert (installed / ".env").stat().st_mode & 0o077 == 0
    users = [line.split(":")[0] for line in (installed / "mosquitto/passwd").read_text().split()]
    assert users == ["parkwatch", "healthcheck"]
    certs = installed / "mosquitto/certs"
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(certs / "ca.crt"),
                             str(certs / "server.crt")], capture_output=True, text=True,
                            check=False)
    assert verify.returncode == 0, verify.stderr


class Broker:
    """mosquitto started on the compose stack's broker config, re-rooted under ``root``."""

    def __init__(self, installed: Path, root: Path) -> None:
        self.root = root
        self.port = free_port()
        service = _service("mosquitto")
        for source, target in _bind_sources(service):
            dest = root / target.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(installed / source, dest)
        for kind, _source, target in _mounts(service):
            if kind == "volume":
                (root / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for conf in (root / "mosquitto/config").rglob("*.conf"):
            text = conf.read_text().replace("/mosquitto/", f"{root}/mosquitto/")
            text = text.replace("listener 8883\n", f"listener {self.port} 127.0.0.1\n")
            conf.write_text(text)
        main_conf = root / "mosquitto/config/mosquitto.conf"
        # Run as ourselves (not the mosquitto user) so the private temp files stay readable.
        with main_conf.open("a") as f:
            f.write(f"\nuser {pwd.getpwuid(os.geteuid()).pw_name}\n")
        # A test-only observer that may read everything, to see what the broker delivers.
        acl = root / "mosquitto/config/acl"
        acl.write_text(acl.read_text() + "\nuser observer\ntopic read #\n")
        subprocess.run(["mosquitto_passwd", "-b", str(root / "mosquitto/config/passwd"),
                        "observer", "observer-pw"], check=True)
        self.main_conf = main_conf
        self.log = (root / "mosquitto.log").open("wb")
        self.proc = subprocess.Popen([require_binary("mosquitto", "mosquitto"), "-c",
                                      str(main_conf)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not _port_open(self.port):
            assert self.proc.poll() is None, (root / "mosquitto.log").read_text()
            assert time.monotonic() < deadline, "mosquitto did not open its TLS port"
            time.sleep(0.05)

    @property
    def ca(self) -> str:
        return str(self.root / "mosquitto/certs/ca.crt")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self.log.close()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def broker(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(installed, tmp_path_factory.mktemp("broker"))
    yield b
    b.stop()


class Client:
    def __init__(self, broker: Broker, user: str | None, password: str | None) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected: queue.Queue[ReasonCode] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"t-{user}-{time.time_ns()}", protocol=mqtt.MQTTv311)
        self.client.tls_set(ca_certs=broker.ca)
        if user is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.put(rc)
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.client.connect("localhost", broker.port)
        self.client.loop_start()
        self.result = self.connected.get(timeout=30)

    def subscribe(self, topic: str) -> None:
        done: queue.Queue[bool] = queue.Queue()
        self.client.on_subscribe = lambda c, u, mid, rcs, p: done.put(True)
        self.client.subscribe(topic, qos=1)
        done.get(timeout=30)

    def publish(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _passwords(installed: Path) -> dict[str, str]:
    env = _env_file(installed / ".env")
    return {"parkwatch": env["PARKWATCH_MQTT_PASSWORD"],
            "healthcheck": env["MQTT_HEALTHCHECK_PASSWORD"]}


def test_broker_refuses_anonymous_and_wrong_passwords(broker: Broker) -> None:
    for user, password in ((None, None), ("parkwatch", "wrong-password")):
        client = Client(broker, user, password)
        try:
            assert client.result.is_failure, f"{user} got in"
        finally:
            client.close()


def test_device_may_publish_only_under_its_own_id(broker: Broker, installed: Path) -> None:
    subprocess.run([str(installed / "scripts/mqtt-user"), "-f",
                    str(broker.root / "mosquitto/config/passwd"), "wp-0017"],
                   check=True, capture_output=True)
    # mqtt-user prints "USER PASSWORD"; run it again through the env to know the password.
    env = {**os.environ, "MQTT_PASSWORD": "device-pw-0017"}
    subprocess.run([str(installed / "scripts/mqtt-user"), "-f",
                    str(broker.root / "mosquitto/config/passwd"), "wp-0017"],
                   check=True, capture_output=True, env=env)
    broker.proc.send_signal(1)  # SIGHUP: reread the password file, as docs/deploy.md says
    gateway = Client(broker, "parkwatch", _passwords(installed)["parkwatch"])
    observer = Client(broker, "observer", "observer-pw")
    device = _wait_for_login(broker, "wp-0017", "device-pw-0017")
    try:
        assert not gateway.result.is_failure
        gateway.subscribe("parks/+/+/+/telemetry")
        observer.subscribe("parkwatch/#")
        # Forbidden first, allowed last, on one connection: the broker handles a client's
        # publishes in order, so when the allowed one arrives the forbidden one is decided.
        device.publish("parks/xz01/b3/wp-0018/telemetry", "spoofed")
        device.publish("parkwatch/alarms/xz01/b3/wp-0018/fire", "spoofed alarm")
        device.publish("parks/xz01/b3/wp-0017/telemetry", "mine")
        assert gateway.messages.get(timeout=30) == ("parks/xz01/b3/wp-0017/telemetry", b"mine")
        gateway.publish("parkwatch/deadletter/unknown_device", "dead letter")
        assert observer.messages.get(timeout=30) == ("parkwatch/deadletter/unknown_device",
                                                     b"dead letter")
        # The watchdog's loop-back: ParkWatch reads back its own probe (gateway/ingest/watchdog.py).
        gateway.subscribe("parkwatch/gateway/+/probe")
        time.sleep(0.5)                   # let the SUBACK land before the probe goes out
        gateway.publish("parkwatch/gateway/demo/probe", "1795000000.000")
        assert gateway.messages.get(timeout=30) == ("parkwatch/gateway/demo/probe",
                                                    b"1795000000.000")
        assert observer.messages.get(timeout=30) == ("parkwatch/gateway/demo/probe",
                                                     b"1795000000.000")
        assert gateway.messages.empty()
        assert observer.messages.empty()
    finally:
        for client in (gateway, observer, device):
            client.close()


def _wait_for_login(broker: Broker, user: str, password: str) -> Client:
    deadline = time.monotonic() + 30
    while True:
        client = Client(broker, user, password)
        if not client.result.is_failure:
            return client
        client.close()
        assert time.monotonic() < deadline, f"{user} never got in after the reload"
        time.sleep(0.1)


def test_compose_health_check_passes_against_the_broker(broker: Broker, installed: Path) -> None:
    require_binary("mosquitto_sub", "mosquitto-clients")
    (command,) = [c for c in _service("mosquitto")["healthcheck"]["test"][1:]]
    command = command.replace("$$", "$").replace("-p 8883", f"-p {broker.port}")
    command = command.replace("/mosquitto/", f"{broker.root}/mosquitto/")
    env = {**os.environ, "MQTT_HEALTHCHECK_PASSWORD": _passwords(installed)["healthcheck"]}
    result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    env["MQTT_HEALTHCHECK_PASSWORD"] = "wrong"
    result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0


# --- systemd -----------------------------------------------------------------------------------

def test_systemd_unit_is_valid_and_hardened(tmp_path: Path) -> None:
    unit = DEPLOY / "systemd/parkwatch.service"
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(unit.read_text())
    service = parser["Service"]
    assert service["Restart"] == "always"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service.get("DynamicUser") == "yes" or service.get("User") == "parkwatch"
    assert service["StateDirectory"] == "parkwatch"
    assert 0 < int(service["TimeoutStopSec"]) <= 120
    assert "run --config" in service["ExecStart"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return  # the configparser checks above are what we can do here
    # /opt/parkwatch does not exist on a build machine: point the unit at this checkout's venv.
    copy = tmp_path / "parkwatch.service"
    copy.write_text(unit.read_text().replace("/opt/parkwatch/.venv", str(ROOT / ".venv")))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_systemd_unit_uses_the_gateways_readiness_and_watchdog() -> None:
    """The gateway sends READY=1 and WATCHDOG=1 (gateway/ingest/watchdog.py); the unit must ask for
    them, give the watchdog more than a few heartbeats, and wait longer than the shutdown."""
    import configparser

    from gateway.config import Settings

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(Path(__file__).resolve().parent.parent / "deploy" / "systemd" /
              "parkwatch.service")
    service = unit["Service"]
    assert service["Type"] == "notify"
    defaults = Settings()
    assert int(service["WatchdogSec"]) >= 3 * defaults.observe.heartbeat_s
    assert int(service["TimeoutStopSec"]) > defaults.shutdown_timeout_s


# --- the cluster example (deploy/cluster, issue 16) ----------------------------------------------

CLUSTER = DEPLOY / "cluster"


def _cluster_compose() -> dict[str, Any]:
    doc = yaml.safe_load((CLUSTER / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _cluster_env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as compose resolves it from .env.example (dummy secrets)."""
    example = _env_file(CLUSTER / ".env.example")

    def value(match: re.Match[str]) -> str:
        found = example[match.group(1)]
        return "dummy-secret-value-0123456789" if found == "CHANGE_ME" else found
    return {k: re.sub(r"\$\{(\w+)[^}]*\}", value, str(v))
            for k, v in service.get("environment", {}).items()}


def test_cluster_compose_references_what_exists() -> None:
    compose = _cluster_compose()
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        assert service.get("restart") == "unless-stopped", name
        for kind, source, _target in _mounts(service):
            if kind == "volume":
                assert source in declared, f"{name}: volume {source} is not declared"
            else:
                assert (CLUSTER / source).exists(), f"{name} mounts {source}: missing"
        if "build" in service:
            context = CLUSTER / service["build"]["context"]
            assert (context / service["build"]["dockerfile"]).is_file(), name
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", (CLUSTER / "compose.yaml").read_text()))
    example = _env_file(CLUSTER / ".env.example")
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    for key, value in example.items():
        if re.search(r"PASSWORD|TOKEN|SECRET|COOKIE", key):
            assert value == "CHANGE_ME", key
    result = subprocess.run(["git", "check-ignore", "deploy/cluster/.env"], cwd=ROOT,
                            capture_output=True, text=True, check=False)
    assert result.stdout.strip() == "deploy/cluster/.env"


def test_cluster_has_an_emqx_cluster_postgres_influx_and_standbys() -> None:
    services = _cluster_compose()["services"]
    emqx = [n for n, s in services.items() if str(s.get("image", "")).startswith("emqx/")]
    assert len(emqx) >= 2
    seeds = {_cluster_env(services[n])["EMQX_CLUSTER__STATIC__SEEDS"] for n in emqx}
    assert len(seeds) == 1, "every node must name the same seeds"
    # A manual-ack consumer needs the broker to keep a big window and queue (EMQX: 32 / 1000).
    assert int(_cluster_env(services[emqx[0]])["EMQX_MQTT__MAX_INFLIGHT"]) >= 1000
    assert str(services["postgres"]["image"]).startswith("postgres:")
    assert str(services["influxdb"]["image"]).startswith("influxdb:")


def test_cluster_instances_pass_check_config_and_pair_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cluster.partitions import hash_slot
    from gateway.config import load_settings

    # A registry of ten parks stands in for the park group's: both hash slots get parks.
    parks = [f"park{i:02d}" for i in range(10)]
    assert {hash_slot(p, 2) for p in parks} == {0, 1}
    registry = tmp_path / "registry.yaml"
    registry.write_text(yaml.safe_dump({"devices": [
        {"device": f"wp-{p}", "park": p, "building": "b1", "floor": "1", "zone": "z",
         "kind": "water_pressure"} for p in parks]}))
    config = CLUSTER / "parkwatch/config.yaml"
    services = _cluster_compose()["services"]
    by_partition: dict[str, list[tuple[str, str, str]]] = {}
    for name, service in services.items():
        if not name.startswith("pw-"):
            continue
        env = {**_cluster_env(service), "PARKWATCH_REGISTRY": str(registry)}
        out = _check_config(config, env, monkeypatch, capsys)
        assert "dummy-secret-value" not in out
        owned = out.rsplit("parks ", 1)[1].strip().split(", ")
        settings = load_settings(config)
        assert settings.cluster.partition is not None
        by_partition.setdefault(settings.cluster.partition, []).append(
            (settings.instance, settings.client_id, ",".join(owned)))
    assert len(by_partition) == 2
    every_park: list[str] = []
    for partition, members in by_partition.items():
        assert len(members) >= 2, f"partition {partition} has no standby"
        assert len({m[0] for m in members}) == len(members), "instance names must differ"
        assert len({m[1] for m in members}) == 1, "a partition's instances share a client id"
        assert len({m[2] for m in members}) == 1
        every_park += members[0][2].split(",")
    assert sorted(every_park) == parks, "every park in exactly one partition"
