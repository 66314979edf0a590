"""A private RabbitMQ node with its MQTT plugin: the second broker implementation the ingest
session is tested against (tests/test_mqtt_session.py).

It runs from the Debian ``rabbitmq-server`` package with its own node name, ports, data
directory, Erlang cookie (HOME) and plugin list, so it never touches the system's node.
RabbitMQ 3.10 speaks MQTT 3.1.1 only; a session with clean session off is a durable queue, and
QoS 1 deliveries without a PUBACK go back to it when the connection drops.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from gateway.tools.devservices import _port_open, _Service, free_port, require_binary


class RabbitMq(_Service):
    name = "rabbitmq"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.amqp_port, self.dist_port = free_port(), free_port()
        require_binary("rabbitmq-server", "rabbitmq-server")
        # The script itself: /usr/sbin/rabbitmq-server would switch to the rabbitmq user, who
        # cannot write into our private data directory.
        self.binary = "/usr/lib/rabbitmq/bin/rabbitmq-server"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        d = self.data_dir
        (d / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            f"mqtt.listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "mqtt.allow_anonymous = true\n"
            "loopback_users = none\n")
        (d / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        return ["env", f"HOME={d}", f"RABBITMQ_NODENAME=pwtest{self.port}@localhost",
                "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1", f"RABBITMQ_NODE_PORT={self.amqp_port}",
                f"RABBITMQ_DIST_PORT={self.dist_port}", f"RABBITMQ_MNESIA_BASE={d}/mnesia",
                f"RABBITMQ_LOG_BASE={d}/log", f"RABBITMQ_CONFIG_FILE={d}/rabbitmq.conf",
                f"RABBITMQ_ENABLED_PLUGINS_FILE={d}/enabled_plugins",
                f"RABBITMQ_PID_FILE={d}/pid", self.binary]

    def _ready(self) -> bool:
        return _port_open(self.port)

    def start(self, timeout: float = 90.0) -> None:
        super().start(timeout)       # an Erlang node takes its time

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        # The start script and the Erlang VM: signal the whole process group we started.
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        super()._signal(sig, timeout)
