"""Configuration: one YAML file, overridable by ``PARKWATCH_*`` environment variables
(docs/configuration.md).

The root :class:`Settings` is composed of one small model per component. Every model forbids
unknown keys, so a typo is a start-up error that names the file, line and key instead of a setting
silently ignored. Secrets are ``SecretStr`` (never printed), and validation does no I/O.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sensors.errors import ConfigError
from sensors.registry import ID_PATTERN
from sensors.yamlsource import LineMap, line_for, load_config_file

ENV_PREFIX = "PARKWATCH_"
ENV_NESTING = "__"
ID_PATTERN_RE = re.compile(ID_PATTERN)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Section):
    """TLS for ``mqtts://``. Paths are checked when connecting, not at validation (no I/O here)."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file without cert_file: set both for client-certificate login")
        return self

    @property
    def configured(self) -> bool:
        return (self.ca_file, self.cert_file, self.key_file) != (None, None, None) \
            or self.insecure_skip_verify


class MqttSettings(_Section):
    """The broker connection. Credentials may sit in the URL; they are moved into ``password``."""

    url: str = "mqtt://127.0.0.1:1883"
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(default=None, description="default: parkwatch-{instance}")
    topic_root: str = Field(default="parks", pattern=r"^[^#+/][^#+]*$")
    priority_session: bool = Field(
        default=True, description="a second session ({client_id}-priority) for events and "
        "status, so they are never stuck behind telemetry in the broker's in-flight window")
    watchdog_s: float = Field(
        default=60.0, ge=0, description="probe the subscription path this often; 0 disables "
        "(missed once: resubscribe; twice: reconnect and raise ingest_stalled)")
    protocol: Literal["5", "3.1.1"] = Field(
        default="5", description="MQTT version of both ingest sessions; 3.1.1 for a broker "
        "without MQTT 5 (no Receive Maximum then: reading pauses when the inbox is full)")
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    session_expiry_s: int = Field(default=7 * 86400, ge=0)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    tls: TlsSettings = TlsSettings()
    allow_plaintext: bool = Field(
        default=False, description="accept mqtt:// with a password to a host off this machine "
        "(the password crosses the network in clear text); logged as a warning at start")

    @model_validator(mode="before")
    @classmethod
    def _split_credentials(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("url"), str):
            return data
        try:
            parts = urlsplit(data["url"])
            port = parts.port
        except ValueError:
            return data  # the url validator explains what is wrong with it
        if not parts.hostname:
            return data
        out = dict(data)
        # Credentials written into the URL are the most specific statement: they win.
        if parts.username is not None:
            out["username"] = unquote(parts.username)
        if parts.password is not None:
            out["password"] = unquote(parts.password)
        netloc = parts.hostname + (f":{port}" if port else "")
        out["url"] = f"{parts.scheme}://{netloc}"
        return out

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as a number.
        return str(value) if isinstance(value, int | float) else value

    @field_validator("topic_root")
    @classmethod
    def _not_our_own(cls, value: str) -> str:
        if value.split("/")[0] == "parkwatch":
            # We would subscribe to our own dead letters and reject them again, forever.
            raise ValueError("topics under 'parkwatch/' are ParkWatch's own; choose another root")
        return value

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises ValueError for a non-numeric port
        except ValueError as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"scheme must be mqtt:// or mqtts://, got {parts.scheme!r}://")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        return value

    @model_validator(mode="after")
    def _tls_needs_mqtts(self) -> MqttSettings:
        if self.tls.configured and not self.tls_enabled:
            # Otherwise the CA and client certificate are silently unused and the password
            # crosses the network in clear text.
            raise ValueError("tls is set but the URL is not mqtts://; use mqtts://host:8883 "
                             "(or remove the tls section)")
        return self

    @model_validator(mode="after")
    def _no_cleartext_password(self) -> MqttSettings:
        if self.cleartext_secret and not self.allow_plaintext:
            raise ValueError(f"mqtt.url {self.url!r} is plain MQTT to a host off this machine, "
                             "so mqtt.password would cross the network in clear text: use "
                             "mqtts:// (docs/security.md), or set mqtt.allow_plaintext: true "
                             "to accept that")
        return self

    @property
    def cleartext_secret(self) -> bool:
        """A password sent unencrypted to another machine."""
        return self.password is not None and not self.tls_enabled and not is_loopback(self.host)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def tls_enabled(self) -> bool:
        return urlsplit(self.url).scheme in ("mqtts", "ssl")

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls_enabled else 1883)


class InfluxSettings(_Section):
    """Where readings go. 1.x uses ``database``; 2.x/3.x use ``org``/``bucket``/``token``."""

    url: str = "http://127.0.0.1:8086"
    version: Literal["auto", "1", "2"] = "auto"
    database: str = "parkwatch"
    retention_policy: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    org: str | None = None
    bucket: str | None = None
    token: SecretStr | None = None
    create_database: bool = Field(default=True, description="1.x: CREATE DATABASE at start")
    batch_lines: int = Field(default=5000, ge=1, le=100_000)
    flush_interval_s: float = Field(default=0.05, gt=0, le=60)
    timeout_s: float = Field(default=10.0, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    allow_plaintext: bool = Field(
        default=False, description="accept an http:// url with a token or password to a host "
        "off this machine (the secret crosses the network in clear text); logged at start")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            # A URL is printed in logs and check-config output; a secret must not ride in it.
            raise ValueError("put credentials in influx.username/password or influx.token, "
                             "not in the URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _v2_needs_org_bucket_token(self) -> InfluxSettings:
        if self.version == "2":
            missing = [k for k in ("org", "bucket", "token") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"version 2 needs {', '.join(missing)} (InfluxDB 2.x/3.x write "
                                 "to a bucket of an org with a token)")
        return self

    @model_validator(mode="after")
    def _no_cleartext_secret(self) -> InfluxSettings:
        if self.cleartext_secret and not self.allow_plaintext:
            raise ValueError(f"influx.url {self.url!r} is http:// to a host off this machine, so "
                             "influx.token/password would cross the network in clear text: use "
                             "https://, or set influx.allow_plaintext: true to accept that")
        return self

    @property
    def cleartext_secret(self) -> bool:
        """A token or password sent unencrypted to another machine."""
        parts = urlsplit(self.url)
        has_secret = self.token is not None or self.password is not None
        return has_secret and parts.scheme == "http" and not is_loopback(parts.hostname or "")


class WalSettings(_Section):
    """The local write-ahead log that makes a message ours before the broker forgets it."""

    max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    segment_bytes: int = Field(default=64 << 20, ge=1 << 16)
    fsync: bool = True
    # What happens when telemetry has filled its share of max_bytes (docs/reliability.md):
    # block = stop acknowledging (the broker holds messages); drop_oldest_telemetry = delete
    # the oldest unsent telemetry, counted. Alarms, events and status are never dropped.
    full_policy: Literal["block", "drop_oldest_telemetry"] = "block"
    priority_share: float = Field(default=0.1, ge=0.01, le=0.5,
                                  description="share of max_bytes kept for alarms and events")


class IngestSettings(_Section):
    """Limits on what devices send, and the batching of durable commits."""

    max_payload_bytes: int = Field(default=64 * 1024, ge=256, le=16 << 20)
    max_age_s: float = Field(default=7 * 86400.0, gt=0)
    max_future_s: float = Field(default=300.0, ge=0)
    queue_size: int = Field(default=20_000, ge=10,
                            description="received-but-unprocessed messages before reading "
                            "pauses (MQTT 5: at most 2 x mqtt.receive_maximum)")
    commit_batch: int = Field(default=2000, ge=1,
                              description="messages made durable with one fsync")
    linger_ms: float = Field(
        default=10.0, ge=0, le=1000,
        description="when fewer than commit_batch / 8 telemetry messages are waiting, wait this "
        "long for more before committing: fewer, larger batches (each costs a WAL fsync, a "
        "commit and a PUBACK write) for at most this much delay. Events and status never wait: "
        "their priority lane does not linger, and with mqtt.priority_session off nothing does")
    ack_after: Literal["wal", "influx"] = Field(
        default="wal", description="when a message gets its PUBACK: once in the local WAL "
        "(fsync; the single-box default) or only once InfluxDB accepted it (and the alarm store "
        "committed what it caused), so a lost host loses nothing the broker does not still "
        "hold (docs/scale.md)")
    max_batch: int = Field(default=1000, ge=1, le=100_000,
                           description="readings in one batch message (and items in any array)")
    # Generous on purpose: a device reporting every second, or uploading a batch a minute, never
    # comes near it; a runaway loop does. A backlog the broker held replays in full (ratelimit.py).
    device_rate_per_s: float = Field(default=20.0, ge=0,
                                     description="telemetry+status messages per second per "
                                                 "device; 0 = no limit; events are never limited")
    device_burst: int = Field(default=200, ge=1,
                              description="messages a device may send at once before the rate "
                                          "applies")


class HttpSettings(_Section):
    """The HTTP API (status, metrics, alarms, maintenance, ack pages). Loopback unless you choose
    otherwise; anywhere else it needs a bearer token (docs/security.md)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    enabled: bool = True
    token: SecretStr | None = Field(default=None, description="bearer token for the API")
    token_file: Path | None = Field(default=None, description="file holding the token (read at "
                                                              "start)")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="host names (no port) browsers and clients may use to "
        "reach the API besides loopback, http.host and notify.public_url's host; anything else "
        "in Host or Origin is refused (DNS rebinding)")

    @field_validator("allowed_hosts")
    @classmethod
    def _bare_hosts(cls, value: list[str]) -> list[str]:
        out = []
        for host in value:
            bare = host.strip().strip("[]").lower()
            if not _HOST_NAME.fullmatch(bare) and not _is_ip(bare):
                raise ValueError(f"{host!r} is not a bare host name or address: give the name "
                                 "only, without scheme, port or path (e.g. gw.park.example)")
            out.append(bare)
        return out

    @property
    def configured_token(self) -> bool:
        """A token chosen by the operator (as opposed to one generated at first start)."""
        return self.token is not None or self.token_file is not None

    @model_validator(mode="after")
    def _exposed_needs_token(self) -> HttpSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        if self.token is not None and len(self.token.get_secret_value().strip()) < 16:
            raise ValueError("token must be at least 16 characters (e.g. openssl rand -hex 32)")
        if self.enabled and not is_loopback(self.host) and not self.configured_token:
            raise ValueError(f"host {self.host!r} is not loopback, so the API would be open "
                             "to the network: set http.token (PARKWATCH_HTTP__TOKEN) or "
                             "http.token_file, or keep host 127.0.0.1")
        return self


_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach; a name other than localhost is not trusted
    to resolve to loopback."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ObserveSettings(_Section):
    gateway_interval_s: float = Field(default=10.0, gt=0, description="gateway measurement")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["logfmt", "json"] = "logfmt"
    heartbeat_url: SecretStr | None = Field(
        default=None, description="pinged (GET) every heartbeat_s while the pipeline runs: a "
        "dead man's switch outside the broker; secret because such URLs carry a token")
    heartbeat_s: float = Field(default=30.0, gt=0)
    liveness_snapshot_s: float = Field(
        default=60.0, gt=0, description="how often every device's online state is written to "
        "device_status (source snapshot), besides each change")
    scorecard_daily: bool = Field(
        default=True, description="the running gateway writes yesterday's scorecard points "
        "(park and tenants) through its WAL each day at scorecard_at (docs/scorecard.md); "
        "needs alarms.enabled")
    scorecard_at: str = Field(
        default="00:10", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="local time of day (park time zone, HH:MM) after which yesterday's "
        "scorecard is computed: late enough for the last minutes to reach InfluxDB")

    def scorecard_time(self) -> dt.time:
        hour, minute = self.scorecard_at.split(":")
        return dt.time(int(hour), int(minute))


class AlarmSettings(_Section):
    """The rule engine (rules from ``rules:``) and its alarm store: ``state_dir/alarms.sqlite3``
    (``backend: sqlite``, one gateway) or a PostgreSQL database every instance shares
    (``backend: postgres``, docs/scale.md)."""

    enabled: bool = True
    lateness_s: float = Field(default=60.0, ge=0,
                              description="readings older than this (device time) change no alarm")
    tick_s: float = Field(default=1.0, gt=0, le=60,
                          description="how often timers (for, silence, door open) are evaluated")
    state_save_s: float = Field(default=5.0, gt=0,
                                description="how often device last-seen times are saved")
    backend: Literal["sqlite", "postgres"] = Field(
        default="sqlite", description="where alarms, outbox and ack tokens live: sqlite "
        "(state_dir/alarms.sqlite3) or postgres (shared by several instances)")
    postgres_dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL connection string for backend postgres, e.g. "
        "postgresql://parkwatch@db.park.example/parkwatch (PARKWATCH_ALARMS__POSTGRES_DSN)")
    postgres_dsn_file: Path | None = Field(
        default=None, description="file holding postgres_dsn (read at start)")

    @model_validator(mode="after")
    def _postgres_needs_dsn(self) -> AlarmSettings:
        if self.postgres_dsn is not None and self.postgres_dsn_file is not None:
            raise ValueError("set postgres_dsn or postgres_dsn_file, not both")
        if self.backend == "postgres" and self.postgres_dsn is None \
                and self.postgres_dsn_file is None:
            raise ValueError("backend postgres needs a database: set alarms.postgres_dsn "
                             "(PARKWATCH_ALARMS__POSTGRES_DSN) or alarms.postgres_dsn_file")
        return self

    def dsn(self) -> str:
        """The PostgreSQL DSN, reading ``postgres_dsn_file`` now (ConfigError if unusable)."""
        if self.postgres_dsn is not None:
            return self.postgres_dsn.get_secret_value()
        if self.postgres_dsn_file is None:
            raise ConfigError("alarms.postgres_dsn", ["alarms.postgres_dsn: not set"])
        try:
            text = self.postgres_dsn_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError("alarms.postgres_dsn_file", [
                f"alarms.postgres_dsn_file: cannot read {self.postgres_dsn_file}: "
                f"{exc.strerror or exc}"]) from None
        if not text:
            raise ConfigError("alarms.postgres_dsn_file", [
                f"alarms.postgres_dsn_file: {self.postgres_dsn_file} is empty"])
        return text


class NotifySettings(_Section):
    """Notifications: the catch-all webhook of docs/configuration.md and, optionally, a routing file
    (channels, contacts, routing tree, escalation; see docs/notifications.md)."""

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    config: Path | None = Field(default=None, description="routing file (notify.example.yaml)")
    dry_run: bool = Field(default=False, description="log notifications instead of sending")
    ack_secret: SecretStr | None = Field(
        default=None, description="signs ack links (>= 16 bytes); no secret, no ack links")
    public_url: str | None = Field(
        default=None, description="how phones reach the gateway, e.g. https://pw.park.example;"
                                  " default http://{http.host}:{http.port}")
    ack_ttl_s: float = Field(default=24 * 3600.0, gt=0, description="ack links expire after")
    allow_plaintext_public_url: bool = Field(
        default=False, description="accept an http:// public_url off this machine (ack links "
        "then travel and are used in clear text); logged as a warning at start")

    @field_validator("public_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL, e.g. https://pw.park.example")
        return value

    @model_validator(mode="after")
    def _no_cleartext_links(self) -> NotifySettings:
        if self.cleartext_public_url and not self.allow_plaintext_public_url:
            raise ValueError(f"notify.public_url {self.public_url!r} is http://, so every ack "
                             "link (a credential) would travel in clear text: serve it over "
                             "https:// (docs/security.md), or set "
                             "notify.allow_plaintext_public_url: true to accept that")
        return self

    @property
    def cleartext_public_url(self) -> bool:
        if self.public_url is None:
            return False
        parts = urlsplit(self.public_url)
        return parts.scheme == "http" and not is_loopback(parts.hostname or "")

    @field_validator("ack_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 16:
            raise ValueError("must be at least 16 bytes")
        return value


class UitdSettings(_Section):
    """The GB/T 26875.3 server for user information transmission devices (docs/uitd.md)."""

    listen: str | None = Field(
        default=None, description="host:port to accept UITDs on (a bare port means 127.0.0.1);"
        " unset: no server")
    points: Path | None = Field(default=None, description="the point map (CSV or YAML); also "
                                "places MQTT panel events")
    centre_address: str = Field(default="000000000001", pattern=r"^[0-9A-Fa-f]{12}$",
                                description="our address in frames: 12 hex digits")
    heartbeat_allowance_s: float = Field(default=90.0, gt=0, description="a UITD silent longer"
                                         " raises its panel's offline alarm")
    clock_sync_s: float = Field(default=14400.0, gt=0, description="clock sync (command 90)")
    max_connections: int = Field(default=1000, ge=1, le=100_000)
    idle_timeout_s: float = Field(default=120.0, gt=0, description="no complete frame for this "
                                  "long: the connection is closed")
    allow_from: list[str] = Field(default_factory=list, description="source IP allow-list "
                                  "(addresses or networks); empty: any")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host, port = split_listen(value)
        return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"{item!r} is not an IP address or network") from exc
        return value


def split_listen(value: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``, or a bare port on 127.0.0.1) → (host, port)."""
    text = value.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", text
    host = host.strip("[]") or "127.0.0.1"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected host:port with a port 0-65535, got {value!r}")
    return host, int(port_text)


class ClusterSettings(_Section):
    """Partitions by park with an active and standbys per partition (docs/scale.md).

    No ``partition``: a single box, today's behaviour (every park, ``{root}/#``). With one, the
    instance owns the parks listed in ``parks`` or, with ``partitions``/``index``, those whose
    stable hash falls in its slot; it runs only while it holds the partition's lease in
    PostgreSQL and otherwise waits as a standby.
    """

    partition: str | None = Field(default=None, pattern=ID_PATTERN,
                                  description="this instance's partition; unset: single box")
    parks: list[str] = Field(default_factory=list, description="the parks the partition owns")
    partitions: int | None = Field(default=None, ge=1, le=4096,
                                   description="hash assignment: number of partitions")
    index: int | None = Field(default=None, ge=0,
                              description="hash assignment: this partition's slot, 0-based")
    lease_s: float = Field(default=10.0, ge=1.0, le=600.0,
                           description="lease length: how long a dead active blocks its standby")
    renew_s: float | None = Field(default=None, gt=0,
                                  description="renewal interval; default lease_s / 4")
    lease_dsn: SecretStr | None = Field(
        default=None, description="PostgreSQL holding the lease table; default: "
        "alarms.postgres_dsn (the lease must live where the fenced alarm store writes)")

    @field_validator("parks")
    @classmethod
    def _park_ids(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if not ID_PATTERN_RE.fullmatch(p)]
        if bad:
            raise ValueError(f"park IDs must match {ID_PATTERN}: {bad}")
        if len(set(value)) != len(value):
            raise ValueError("a park is listed twice")
        return value

    @model_validator(mode="after")
    def _one_assignment(self) -> ClusterSettings:
        hashed = self.partitions is not None or self.index is not None
        if self.partition is None:
            if self.parks or hashed:
                raise ValueError("parks/partitions/index need cluster.partition (this instance's"
                                 " partition id); without it the instance owns every park")
            return self
        if self.parks and hashed:
            raise ValueError("set either cluster.parks (a list) or cluster.partitions + "
                             "cluster.index (a hash of park ids), not both")
        if not self.parks and not hashed:
            raise ValueError(f"partition {self.partition!r} owns no park: set cluster.parks, "
                             "or cluster.partitions + cluster.index")
        if hashed and (self.partitions is None or self.index is None):
            raise ValueError("hash assignment needs both cluster.partitions and cluster.index")
        if self.partitions is not None and self.index is not None \
                and self.index >= self.partitions:
            raise ValueError(f"cluster.index {self.index} is not below cluster.partitions "
                             f"{self.partitions}")
        if self.renew_s is not None and self.renew_s > self.lease_s / 2:
            # One renewal may fail or be slow; the next must still land inside the lease.
            raise ValueError(f"cluster.renew_s {self.renew_s:g} must be at most half of "
                             f"cluster.lease_s {self.lease_s:g}")
        return self

    @property
    def enabled(self) -> bool:
        return self.partition is not None

    @property
    def renew_every_s(self) -> float:
        return self.renew_s if self.renew_s is not None else self.lease_s / 4


class ParkSettings(_Section):
    name: str = ""
    timezone: str = "Asia/Shanghai"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value


class Settings(BaseSettings):
    """The whole configuration. See docs/configuration.md for every key."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter=ENV_NESTING,
                                      extra="forbid", frozen=True, case_sensitive=False)

    instance: str = Field(default="parkwatch", pattern=ID_PATTERN)
    registry: Path = Path("config/registry.yaml")
    tenants: Path | None = Field(
        default=None, description="the tenant register (YAML or CSV); when set, every "
        "registry device's tenant must be in it")
    rules: Path = Path("config/rules")
    state_dir: Path = Path("var/parkwatch")
    uvloop: bool = Field(
        default=True, description="run `parkwatch run` on uvloop when it is installed (a "
        "faster event loop); false: the standard asyncio loop")
    shutdown_timeout_s: float = Field(
        default=20.0, gt=0, description="on SIGTERM, how long in-flight work may take to "
        "become durable before the gateway exits anyway (the broker keeps what was not acked)")
    default_timezone: str = "Asia/Shanghai"
    parks: dict[str, ParkSettings] = Field(default_factory=dict)
    mqtt: MqttSettings = MqttSettings()
    influx: InfluxSettings = InfluxSettings()
    wal: WalSettings = WalSettings()
    ingest: IngestSettings = IngestSettings()
    http: HttpSettings = HttpSettings()
    observe: ObserveSettings = ObserveSettings()
    alarms: AlarmSettings = AlarmSettings()
    notify: NotifySettings = NotifySettings()
    uitd: UitdSettings = UitdSettings()
    cluster: ClusterSettings = ClusterSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (docs/configuration.md); the file comes as kwargs.
        return env_settings, init_settings, file_secret_settings

    @model_validator(mode="after")
    def _public_api_needs_token(self) -> Settings:
        if self.notify.public_url is not None and self.http.enabled \
                and not self.http.configured_token:
            # A reverse proxy forwarding to a loopback-bound API makes every request look local.
            raise ValueError("notify.public_url is set, so a proxy reaches this API from outside:"
                             " set http.token (PARKWATCH_HTTP__TOKEN) or http.token_file, and "
                             "let the proxy forward only /ack/ (docs/security.md)")
        return self

    @model_validator(mode="after")
    def _ack_after_influx_blocks(self) -> Settings:
        if self.ingest.ack_after == "influx" and self.wal.full_policy != "block":
            # Evicting telemetry that the broker was told nothing about yet, then acking it,
            # would lose it: the whole point of acking after InfluxDB is that nothing is lost.
            raise ValueError("ingest.ack_after: influx needs wal.full_policy: block")
        return self

    @model_validator(mode="after")
    def _partition_needs_lease(self) -> Settings:
        a = self.alarms
        if self.cluster.enabled and self.cluster.lease_dsn is None \
                and a.postgres_dsn is None and a.postgres_dsn_file is None:
            raise ValueError(f"cluster.partition {self.cluster.partition!r} needs a PostgreSQL "
                             "lease: set cluster.lease_dsn (PARKWATCH_CLUSTER__LEASE_DSN) or "
                             "alarms.postgres_dsn")
        return self

    def lease_dsn(self) -> str | None:
        """Where the partition lease lives: cluster.lease_dsn, else the alarm store's DSN
        (read from ``postgres_dsn_file`` now; ConfigError if unusable). None: no partition."""
        if not self.cluster.enabled:
            return None
        if self.cluster.lease_dsn is not None:
            return self.cluster.lease_dsn.get_secret_value()
        return self.alarms.dsn()

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return ParkSettings._known_zone(value)

    @field_validator("parks")
    @classmethod
    def _park_ids(cls, value: dict[str, ParkSettings]) -> dict[str, ParkSettings]:
        bad = [k for k in value if not ID_PATTERN_RE.fullmatch(k)]
        if bad:
            raise ValueError(f"park IDs must match {ID_PATTERN}: {bad}")
        return value

    @property
    def client_id(self) -> str:
        # A partition's active and standbys share one client id: the standby that takes over
        # resumes the partition's persistent session, with everything the broker kept for it.
        if self.mqtt.client_id:
            return self.mqtt.client_id
        if self.cluster.partition is not None:
            return f"parkwatch-{self.cluster.partition}"
        return f"parkwatch-{self.instance}"

    def startup_warnings(self) -> list[str]:
        """Settings that work but cost something the operator may not expect (logged at
        start)."""
        out = []
        if self.ingest.ack_after == "influx" \
                and self.mqtt.receive_maximum < self.influx.batch_lines:
            out.append(f"ingest.ack_after: influx with mqtt.receive_maximum "
                       f"{self.mqtt.receive_maximum} < influx.batch_lines "
                       f"{self.influx.batch_lines}: the broker stops sending before a batch "
                       "fills, so each write waits influx.flush_interval_s; raise "
                       "receive_maximum (and the broker's inflight limit) to at least the batch")
        return out

    def plaintext_warnings(self) -> list[str]:
        """One line per secret the operator chose to send in clear text (logged at start)."""
        out = []
        if self.mqtt.cleartext_secret:
            out.append(f"mqtt.allow_plaintext: the MQTT password goes to {self.mqtt.host} in "
                       "clear text; use mqtts://")
        if self.influx.cleartext_secret:
            out.append(f"influx.allow_plaintext: the InfluxDB credentials go to "
                       f"{urlsplit(self.influx.url).hostname} in clear text; use https://")
        if self.notify.cleartext_public_url:
            out.append("notify.allow_plaintext_public_url: ack links travel and are used in "
                       "clear text; serve notify.public_url over https://")
        if self.cluster.enabled and self.alarms.enabled and self.alarms.backend == "sqlite":
            out.append(f"cluster.partition {self.cluster.partition} with alarms.backend sqlite: "
                       "a standby that takes over does not see this instance's alarms, outbox "
                       "or ack tokens; use alarms.backend: postgres (docs/scale.md)")
        return out

    def timezone_for(self, park: str) -> ZoneInfo:
        park_settings = self.parks.get(park)
        return ZoneInfo(park_settings.timezone if park_settings else self.default_timezone)



def load_settings(path: str | Path | None) -> Settings:
    """Load and validate the config file plus environment overrides.

    Raises ConfigError listing every problem with ``file:line: key: message``; an error caused by
    an environment variable names the variable instead of a line.
    """
    env = os.environ
    doc: Any = {}
    lines: LineMap = {}
    source = "(defaults)"
    if path is not None:
        path = Path(path)
        source = str(path)
        doc, lines = load_config_file(path)
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise ConfigError(source, [f"{path}:1: the top level must be a mapping of settings"])
    try:
        settings = Settings(**doc)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(err, source, lines, env) for err in exc.errors()]
                          ) from None
    return settings


def _describe(err: Mapping[str, Any], source: str, lines: LineMap, env: Mapping[str, str]) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    var = ENV_PREFIX + ENV_NESTING.join(str(p) for p in loc).upper()
    if any(k.upper() == var for k in env):
        where = f"environment variable {var}"
    else:
        line = line_for(lines, loc)
        where = f"{source}:{line}" if line else source
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/configuration.md)"
    shown = ""
    # Only scalars are echoed: a whole section could carry a token or a password.
    if (err.get("type") != "extra_forbidden" and isinstance(err.get("input"), str | int | float)
            and not _secretish(loc)):
        shown = f" (got {err['input']!r})"
    return f"{where}: {key}: {msg}{shown}"


def _secretish(loc: tuple[Any, ...]) -> bool:
    return any(str(p) in ("password", "token", "webhook_secret", "ack_secret", "url",
                          "lease_dsn", "postgres_dsn")
               for p in loc)
