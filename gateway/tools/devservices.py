"""Private mosquitto and influxd instances for the demo, the tests and the benchmarks.

Each runs from the Debian binary with a config written into its own data directory, listens on
loopback ports chosen here, and can be stopped, killed (SIGKILL) and restarted on the same ports
and data, which is how the tests simulate outages. They never touch the system services.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO
from urllib.parse import urlencode


class ServiceError(RuntimeError):
    """A local service could not be started or did not become ready in time."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _Service:
    """A child process with a config file, a log file and a readiness probe."""

    name = "service"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        if self.running:
            return
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self._command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log_path}:\n{self._tail()}")
            if self._ready():
                return
            time.sleep(0.05)
        self.kill()
        raise ServiceError(f"{self.name} not ready on port {self.port} after {timeout}s; "
                           f"see {self.log_path}:\n{self._tail()}")

    def _tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop (SIGTERM), so the service saves its state."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Abrupt stop (SIGKILL): what a power cut or OOM kill looks like."""
        self._signal(signal.SIGKILL, 10.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.proc = None
        # A port in TIME_WAIT is fine to rebind, but a lingering listener is not: wait it out.
        deadline = time.monotonic() + 5
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> _Service:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def require_binary(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        raise ServiceError(f"{name} not found; install the Debian package: "
                           f"apt-get install {package}")
    return path


class Mosquitto(_Service):
    """A mosquitto broker with persistence and limits sized for a manual-ack consumer.

    ``max_queued_messages`` defaults to 1000 in mosquitto and silently drops beyond it for a slow
    consumer, so it is raised here; the production guidance is in docs/adr/0001.
    """

    name = "mosquitto"

    def __init__(self, data_dir: Path, port: int | None = None, *, extra_conf: str = "") -> None:
        super().__init__(data_dir, port)
        self.extra_conf = extra_conf
        self.binary = require_binary("mosquitto", "mosquitto")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        conf = self.data_dir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            # Started as root, mosquitto drops to the `mosquitto` user, which cannot write its
            # persistence file into our private data dir, and sessions would not survive a
            # restart. Keep the invoking user instead.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.data_dir}/\n"
            "autosave_interval 5\n"
            "max_inflight_messages 1000\n"
            "max_queued_messages 1000000\n"
            "max_queued_bytes 0\n"
            "persistent_client_expiration 7d\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "log_dest stderr\n"
            f"{self.extra_conf}\n"
        )
        return [self.binary, "-c", str(conf)]

    def _ready(self) -> bool:
        return _port_open(self.port)


class Influxd(_Service):
    """An InfluxDB 1.x server (Debian's ``influxdb`` package) with its data in ``data_dir``."""

    name = "influxd"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.rpc_port = free_port()
        self.binary = require_binary("influxd", "influxdb")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        conf = self.data_dir / "influxdb.conf"
        d = self.data_dir
        conf.write_text(
            "reporting-disabled = true\n"
            f'bind-address = "127.0.0.1:{self.rpc_port}"\n'
            f'[meta]\n  dir = "{d}/meta"\n'
            f'[data]\n  dir = "{d}/data"\n  wal-dir = "{d}/wal"\n'
            "  query-log-enabled = false\n"
            "[monitor]\n  store-enabled = false\n"
            f'[http]\n  bind-address = "127.0.0.1:{self.port}"\n  log-enabled = false\n'
            "[logging]\n  level = \"warn\"\n"
            "[continuous_queries]\n  enabled = false\n"
        )
        return [self.binary, "-config", str(conf)]

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as resp:
                return bool(resp.status == 204)
        except (urllib.error.URLError, OSError):
            return False

    def query(self, q: str, db: str = "") -> dict[str, object]:
        """Run an InfluxQL statement and return the decoded JSON (for tests and the demo)."""
        params = urlencode({"q": q, "db": db, "epoch": "ms"})
        req = urllib.request.Request(f"{self.url}/query", data=params.encode(), method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            result: dict[str, object] = json.loads(resp.read())
            return result


def _postgres_bin(name: str) -> str:
    """A PostgreSQL server binary: Debian keeps them off PATH, in /usr/lib/postgresql/<v>/bin."""
    found = shutil.which(name)
    if found is not None:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                        else 0)
    if not candidates:
        raise ServiceError(f"{name} not found; install the Debian package: "
                           "apt-get install postgresql")
    return str(candidates[-1])


class Postgres(_Service):
    """A private PostgreSQL cluster (``initdb`` + ``postgres``) on a loopback port.

    PostgreSQL refuses to run as root, so as root the cluster belongs to the ``postgres`` user
    (created by Debian's package) and lives in a directory of its own under the system temp
    dir: a root-only pytest tmp dir would not let that user in. ``data_dir`` then only holds the
    log. Authentication is ``trust`` on loopback: the cluster is a throwaway for tests and the demo.
    """

    name = "postgres"
    user = "parkwatch"

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir, port)
        self.binary = _postgres_bin("postgres")
        self._as: list[str] = []
        self.cluster = data_dir / "cluster"
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            # setpriv execs (no fork), so signals reach the postmaster itself.
            self._as = [require_binary("setpriv", "util-linux"), f"--reuid={owner.pw_uid}",
                        f"--regid={owner.pw_gid}", "--init-groups", "--"]
            base = Path(tempfile.mkdtemp(prefix="parkwatch-pg-"))
            os.chown(base, owner.pw_uid, owner.pw_gid)
            self.cluster = base / "cluster"
        if not (self.cluster / "PG_VERSION").exists():
            subprocess.run([*self._as, _postgres_bin("initdb"), "-D", str(self.cluster),
                            "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync",
                            "--locale=C.UTF-8"],
                           check=True, capture_output=True)

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _command(self) -> list[str]:
        return [*self._as, self.binary, "-D", str(self.cluster), "-p", str(self.port),
                "-k", str(self.cluster), "-c", "listen_addresses=127.0.0.1",
                "-c", "max_connections=200", "-c", "shared_buffers=32MB"]

    def _ready(self) -> bool:
        if not _port_open(self.port):
            return False
        probe = subprocess.run([_postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p",
                                str(self.port), "-U", self.user], capture_output=True)
        return probe.returncode == 0

    def kill(self) -> None:
        # The postmaster's backends outlive a SIGKILL of the postmaster alone, and then hold
        # its shared memory: kill the whole process group, as a power cut would.
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        super().kill()

    def create_database(self, name: str) -> str:
        """Create a database and return its DSN (each test isolates itself in its own)."""
        subprocess.run([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", self.user, name], check=True, capture_output=True)
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        """Stop and delete the cluster's files."""
        self.stop()
        shutil.rmtree(self.cluster.parent if self._as else self.cluster, ignore_errors=True)
