"""The HTTP API: ``app`` (status, metrics, health; the app factory), ``auth`` (bearer token),
``alarmapi`` (alarms and maintenance), ``ackpage`` (the page behind an ack link).

Sees the running gateway only through ``app.GatewayView`` and the alarm service protocol.
May import: ``gateway.notify``, ``gateway.alarms``, ``gateway.ingest``, ``gateway.storage``,
the base modules, ``rules`` and ``sensors``; never ``gateway.runtime`` or ``gateway.tools``.
"""
