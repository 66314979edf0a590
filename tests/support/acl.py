"""The reference mosquitto ACL: docs/security.md shows it, test_mqtt_tls.py runs a broker with it.

test_security.py checks that the documented copy is this one, so the docs show a tested ACL.
"""

from __future__ import annotations

REFERENCE_ACL = """\
# ParkWatch logs in as "parkwatch": it reads every device topic and writes only its own topics
# (dead letters, alarm documents, its liveness status and Last Will), and reads back the
# watchdog's probe (mqtt.watchdog_s).
user parkwatch
topic read parks/#
topic write parkwatch/deadletter/#
topic write parkwatch/alarms/#
topic write parkwatch/gateway/#
topic read parkwatch/gateway/+/probe

# Every other login is a device whose user name is its device id; mosquitto puts that name in
# place of %u. A device may publish telemetry, events and its status (and Last Will) under its
# own id only, and may read nothing. ParkWatch checks park and building against the registry.
pattern write parks/+/+/%u/telemetry
pattern write parks/+/+/%u/event
pattern write parks/+/+/%u/status
"""
