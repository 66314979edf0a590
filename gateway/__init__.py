"""ParkWatch, the service: MQTT in, validated readings to InfluxDB, alarms out.

One subpackage per concern; each says in its docstring what lives there and what it may
import (pyproject.toml's import-linter contracts enforce it, highest layer first):

- ``tools``   the ``parkwatch`` command, the alarm CLI, ``top``, the demo, dev services, the
              simulator. May import everything.
- ``http``    status endpoints, bearer auth, the alarm API, the ack page. Sees the running
              gateway only through ``http.app.GatewayView``.
- ``runtime`` the lifecycle and the stages that join ingest, storage, alarms and notify.
- ``grafana`` dashboards generated from code; imported only by ``tools``.
- ``notify``  notifications: routing, grouping, escalation, the outbox, the dispatcher,
              ``notify/channels`` (one adapter per provider).
- ``alarms``  the alarm keeper (engine + store), outputs, the alarm service, ack links,
              gateway-health alarms.
- ``ingest``  the MQTT session, validation, rate limits, dead letters, the watchdog.
- ``storage`` the write-ahead log and its streams, line protocol, InfluxDB delivery.

Base modules any subpackage may import: ``config`` (settings), ``errors`` (the service's
errors; the root is ``sensors.errors``), ``logs``, ``metrics``. Below all of gateway/ sit
``rules`` (the pure engine) and ``sensors`` (kinds, decoders, the registry), which import
nothing from gateway/.
"""
