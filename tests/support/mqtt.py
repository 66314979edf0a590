"""Test-side MQTT: a subscriber that records what it gets, and reading a retained message."""

from __future__ import annotations

import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.ids import unique


class Collector:
    """A paho subscriber in its own thread: test-side only, the gateway never uses threads."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.first_seen: dict[str, float] = {}  # topic -> wall time of its first message
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("col"))
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.first_seen.setdefault(msg.topic, time.time())

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def retained_payload(port: int, topic: str, wait_s: float = 2.0) -> bytes | None:
    """The retained message on ``topic`` (None when there is none), from a fresh subscriber."""
    seen = Collector(port, topic)
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and not seen.snapshot():
            time.sleep(0.02)
        messages = seen.snapshot()
        return messages[-1][1] if messages else None
    finally:
        seen.close()
